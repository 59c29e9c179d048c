"""Operator tools that are not part of the deploybot package (stack deployment)."""
