"""Tests of the CloudFormation templates and the stack tool."""
