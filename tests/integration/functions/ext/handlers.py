"""A handler whose environment runs an external extension (``extensions/counter``)."""


def handler(event, context):
    return {"request_id": context.aws_request_id, "event": event}
