"""Handlers of the benchmark's functions."""


def echo(event, context):
    return {"event": event, "function": context.function_name}
