"""The ``context`` object handed to handlers, with the fields of AWS's Python runtime."""

from __future__ import annotations

import time


class LambdaContext:
    def __init__(self, function_name: str, memory_mb: int, request_id: str,
                 timeout_s: float, region: str = "us-east-1",
                 account: str = "000000000000") -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:{region}:{account}:function:{function_name}")
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "hyperplane"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
