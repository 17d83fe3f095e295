"""A handler run by awslambdaric (the official runtime interface client)."""


def handler(event, context):
    return {"via": "awslambdaric", "event": event, "function": context.function_name,
            "request_id": context.aws_request_id}
