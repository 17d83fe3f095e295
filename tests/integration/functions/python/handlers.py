"""Handlers for the runtime tests (built-in Python runtime)."""

import os
import time


def ok(event, context):
    return {"event": event, "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "arn": context.invoked_function_arn,
            "runtime_api": os.environ.get("AWS_LAMBDA_RUNTIME_API")}


def fail(event, context):
    raise ValueError("the order is not valid")


def slow(event, context):
    time.sleep(float(event.get("sleep", 5)))
    return "finished"
