#!/usr/bin/env bash
# Runs a deploybot command for the Makefile and keeps its exit code in sight. GNU make exits 2
# whenever a recipe fails, so `make deploy` cannot pass deploybot's 1, 3 or 4 on; this prints
# the code and its meaning instead (`deploybot` itself exits with them: use it in scripts).
# DEPLOYBOT_VIA=make: the hints deploybot prints name make's targets (`make unfreeze ENV=x`).
DEPLOYBOT_VIA=make "$@"
code=$?
case $code in
    0) ;;
    1) meaning="the rollout failed, or was rolled back, aborted or replaced" ;;
    2) meaning="refused before any change" ;;
    3) meaning="still rolling out when the timeout came; ECS carries on, and it keeps the lock (make status)" ;;
    4) meaning="lost sight of the rollout (AWS stopped answering for AWS_LOST_SECONDS); it keeps the lock: see make status" ;;
    130) meaning="interrupted; a rollout that started goes on in ECS (make status)" ;;
    *) meaning="unexpected" ;;
esac
if [ "$code" -ne 0 ]; then
    echo "make: deploybot exited $code: $meaning." >&2
fi
exit "$code"
