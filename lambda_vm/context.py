"""The ``context`` object handed to Python handlers, with the fields of AWS's Python
runtime (pure): names, memory, request id, ARN, the deadline (epoch milliseconds, from
``Lambda-Runtime-Deadline-Ms``), and ``client_context`` / ``identity`` parsed from the
``Lambda-Runtime-Client-Context`` and ``-Cognito-Identity`` JSON headers (None without)."""

from __future__ import annotations

import json
import time


class CognitoIdentity:
    def __init__(self, data: dict) -> None:
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class Client:
    def __init__(self, data: dict) -> None:
        self.installation_id = data.get("installation_id")
        self.app_title = data.get("app_title")
        self.app_version_name = data.get("app_version_name")
        self.app_version_code = data.get("app_version_code")
        self.app_package_name = data.get("app_package_name")


class ClientContext:
    def __init__(self, data: dict) -> None:
        self.client = Client(data["client"]) if isinstance(data.get("client"), dict) else None
        self.custom = data.get("custom")
        self.env = data.get("env")


def _parsed(text: str | None) -> dict | None:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class LambdaContext:
    def __init__(self, function_name: str, memory_mb: int, request_id: str,
                 deadline_ms: int, invoked_function_arn: str,
                 client_context: str | None = None, identity: str | None = None) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "hyperplane"
        self._deadline_ms = deadline_ms
        context = _parsed(client_context)
        self.client_context = ClientContext(context) if context is not None else None
        ident = _parsed(identity)
        self.identity = CognitoIdentity(ident) if ident is not None else None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))
