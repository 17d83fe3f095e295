"""The AWS-compatible HTTP endpoint (I/O): boto3 and the AWS CLI call Lambda, EC2 and STS here.

``Endpoint(port, handlers, account_of)`` is a ``ThreadingHTTPServer`` on
``127.0.0.1:port`` only (port 0: an ephemeral one, see ``.port``), HTTP/1.1 with
keep-alive.  ``serve(endpoint)`` runs it until SIGTERM (or Ctrl-C) and shuts it
down cleanly; ``start()``/``close()`` run it in a thread (tests).

Per request, in its own thread:

1. the body: at most ``MAX_BODY`` bytes (``Content-Length`` or chunked); a larger
   one is answered ``413 RequestEntityTooLargeException`` ("Request must be
   smaller than 70167211 bytes for the <Op> operation") without reading it, and
   the connection is closed;
2. the service: the SigV4 credential scope of the ``Authorization`` header or of a
   presigned query (``sigv4``; no secret is checked).  Without one: 403
   ``MissingAuthenticationTokenException`` (rest-json) or
   ``MissingAuthenticationToken`` (query protocols) "Missing Authentication
   Token", the protocol guessed from the path and form;
3. the account: ``account_of(access_key)``, called once per signed request before
   anything else; it may raise ``ApiError`` (answered like a handler's);
4. the operation: rest-json by ``restjson.route`` (none: 404
   ``UnknownOperationException`` "Unknown operation: <METHOD> <path> (<service>)"),
   ``ec2``/``query`` by the form's ``Action`` (unknown: 400 ``InvalidAction``
   "The action <X> is not valid for this web service."); an operation the model
   knows but ``handlers`` lacks gets the same errors, naming service and
   operation;
5. the params (``restjson.parse`` / ``query.parse``, boto3's own shapes), then
   ``handlers[(service, Operation)](call)`` in this thread, then the answer
   (``restjson.serialize`` / ``query.serialize``).

A handler returns the operation's output as boto3 would return it (without
``ResponseMetadata``); ``shapes.problems`` checks one.  The key ``"__status__"``
(an int) in that dict overrides the HTTP status (Lambda Invoke: 202 for
``Event``, 204 for ``DryRun``); it is never sent.  A handler reports a failure
by raising ``hyperplane.errors.ApiError(kind, message, status, **extra)``: the
protocol's error shape with that code, message and status.  A ``ProtocolError``
(a malformed body or form value) is a 400 (``InvalidRequestContentException``,
``InvalidParameterValue`` for ec2, ``MalformedQueryString`` for sts); any other
exception a 500 (``ServiceException``, ``InternalError``, ``InternalFailure``)
whose message names the request id only: the traceback goes to stderr.  Every
answer carries ``x-amzn-RequestId`` (the XML ones also in the body) and
``Content-Length``, but one: an operation whose output is an event stream
(``InvokeWithResponseStream``) returns its ``eventstream`` member as an iterator of
``{EventName: value}``; the head goes out at once (``Content-Type:
application/vnd.amazon.eventstream``, ``Transfer-Encoding: chunked``) and each event as
its own HTTP chunk the moment the iterator yields it (``eventstream``), so that boto3's
``EventStream`` sees it as it comes.  A client that goes away closes the iterator; an
iterator that fails ends the body without its last chunk (the client sees a broken stream).
"""

from __future__ import annotations

import signal
import socket
import socketserver
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from botocore.model import OperationModel, ServiceModel

from hyperplane.endpoint import eventstream, models, query, restjson, sigv4
from hyperplane.endpoint.wire import ProtocolError
from hyperplane.errors import ApiError

MAX_BODY = 70167211
STATUS_KEY = restjson.STATUS_KEY
MISSING_TOKEN = "Missing Authentication Token"
_MISSING = {"rest-json": "MissingAuthenticationTokenException"}
_BAD_REQUEST = {"lambda": "InvalidRequestContentException", "ec2": "InvalidParameterValue",
                "sts": "MalformedQueryString"}
_INTERNAL = {"lambda": "ServiceException", "ec2": "InternalError", "sts": "InternalFailure"}


@dataclass(frozen=True)
class Call:
    """One API call as a handler sees it.

    ``params`` are the operation's input as boto3 params; ``region`` and
    ``access_key`` come from the SigV4 credential scope, ``account`` from
    ``account_of(access_key)``; ``headers`` are the request's, names lower-cased.
    """

    service: str
    operation: str
    params: dict
    region: str
    account: str
    request_id: str
    headers: dict[str, str] = field(default_factory=dict)
    access_key: str = ""


Handler = Callable[[Call], dict]


@dataclass(frozen=True)
class Request:
    method: str
    target: str                 # the path and query string as sent
    headers: dict[str, str]     # names lower-cased
    body: bytes = b""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    close: bool = False
    stream: Iterator[bytes] | None = None  # an event stream's messages, as they come


class Endpoint(ThreadingHTTPServer):
    """The HTTP endpoint on 127.0.0.1: ``handlers`` by (service, OperationName)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, handlers: Mapping[tuple[str, str], Handler],
                 account_of: Callable[[str], str]) -> None:
        self.handlers = dict(handlers)
        self.account_of = account_of
        self._thread: threading.Thread | None = None
        for name in models.SERVICES:
            models.service(name)        # read the models once, before any request
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host's name up (DNS): not needed
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (until ``close``)."""
        self._thread = threading.Thread(target=self.serve_forever, name="endpoint",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop serving (if ``start``ed) and close the listening socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    # -- one request ----------------------------------------------------------------------
    def answer(self, request: Request, request_id: str) -> Reply:
        """The reply to one whole request (never raises)."""
        path, _, raw_query = request.target.partition("?")
        qs = parse_qs(raw_query, keep_blank_values=True)
        credential = sigv4.parse_authorization(request.headers.get("authorization")) or \
            sigv4.from_query(qs)
        if credential is None:
            model = models.service(_guess(request, qs))
            code = _MISSING.get(model.protocol, "MissingAuthenticationToken")
            return self.error_reply(model, ApiError(code, MISSING_TOKEN, 403), request_id)
        service = credential.service
        if service not in models.SERVICES:
            model = models.service(_guess(request, qs))
            error = _unknown(model, service, None, request.method, path, qs)
            return self.error_reply(model, error, request_id)
        model = models.service(service)
        try:
            account = self.account_of(credential.access_key)
            op, params = self._dispatch(model, request, path, qs)
            call = Call(service, op.name, params, credential.region, account, request_id,
                        dict(request.headers), credential.access_key)
            output = self.handlers[(service, op.name)](call)
            return self._success(model, op, output or {}, request_id)
        except ApiError as error:
            return self.error_reply(model, error, request_id)
        except ProtocolError as exc:
            return self.error_reply(model, ApiError(_BAD_REQUEST[service], str(exc), 400),
                                    request_id)
        except Exception:
            return self.error_reply(model, _internal(model, request_id), request_id)

    def refuse(self, request: Request, error: ApiError, request_id: str) -> Reply:
        """An error reply to a request whose body is not read (the connection closes)."""
        return replace(self.error_reply(_target(request), error, request_id), close=True)

    def too_large(self, request: Request, request_id: str) -> Reply:
        """The 413 of a body over ``MAX_BODY`` (not read; the connection closes)."""
        model = _target(request)
        qs = parse_qs(request.target.partition("?")[2], keep_blank_values=True)
        name = (qs.get("Action") or ["requested"])[0]
        if model.protocol == "rest-json":
            found = restjson.route(model, request.method, request.target)
            name = found[0].name if found is not None else name
        message = f"Request must be smaller than {MAX_BODY} bytes for the {name} operation"
        return self.refuse(request, ApiError("RequestEntityTooLargeException", message, 413),
                           request_id)

    def _dispatch(self, model: ServiceModel, request: Request, path: str,
                  qs: dict[str, list[str]]) -> tuple[OperationModel, dict]:
        service = model.service_name
        if model.protocol == "rest-json":
            found = restjson.route(model, request.method, request.target)
            if found is None:
                raise _unknown(model, service, None, request.method, path, qs)
            op, labels = found
            if (service, op.name) not in self.handlers:
                raise _unknown(model, service, op.name, request.method, path, qs)
            return op, restjson.parse(op, labels, qs, request.headers, request.body)
        form = _form(qs, request.body, strict=True)
        action = (form.get("Action") or [""])[0]
        if action not in models.operation_names(model):
            raise _unknown(model, service, None, request.method, path, form)
        op = model.operation_model(action)
        if (service, op.name) not in self.handlers:
            raise _unknown(model, service, op.name, request.method, path, form)
        return op, query.parse(op, form)

    def _success(self, model: ServiceModel, op: OperationModel, output: dict,
                 request_id: str) -> Reply:
        stream = None
        if model.protocol == "rest-json":
            if op.has_event_stream_output and output.get(_stream_member(op)) is not None:
                output = dict(output)
                items = output.pop(_stream_member(op))
                stream = eventstream.events(op.get_event_stream_output(), items)
            status, headers, body = restjson.serialize(op, output)
            if stream is not None:
                headers["Content-Type"] = eventstream.CONTENT_TYPE
        else:
            body = query.serialize(model, op, output, request_id)
            status = int(output.get(STATUS_KEY) or 200)
            headers = {"Content-Type": query.content_type(model)}
        return Reply(status, {**headers, "x-amzn-RequestId": request_id}, body, stream=stream)

    def error_reply(self, model: ServiceModel, error: ApiError, request_id: str) -> Reply:
        """``error`` in ``model``'s protocol (an error that cannot be written: a 500)."""
        try:
            status, headers, body = _error_parts(model, error, request_id)
        except Exception:
            status, headers, body = _error_parts(model, _internal(model, request_id),
                                                 request_id)
        return Reply(status, {**headers, "x-amzn-RequestId": request_id}, body)


def _stream_member(op: OperationModel) -> str:
    """The output member that is the event stream (the output shape's payload)."""
    return op.output_shape.serialization.get("payload", "")


def _error_parts(model: ServiceModel, error: ApiError,
                 request_id: str) -> tuple[int, dict[str, str], bytes]:
    if model.protocol == "rest-json":
        return restjson.serialize_error(model, error)
    return query.serialize_error(model, error, request_id)


def _internal(model: ServiceModel, request_id: str) -> ApiError:
    """The 500 of an unexpected exception (being handled): its traceback to stderr."""
    sys.stderr.write(f"hyperplane endpoint: request {request_id} failed:\n"
                     f"{traceback.format_exc()}")
    sys.stderr.flush()
    return ApiError(_INTERNAL.get(model.service_name, "InternalFailure"),
                    f"An internal error occurred (request {request_id}).", 500)


def _unknown(model: ServiceModel, service: str, operation: str | None, method: str,
             path: str, form: Mapping[str, list[str]]) -> ApiError:
    """The unknown-operation error of ``model``'s protocol."""
    if model.protocol == "rest-json":
        if operation is None:
            return ApiError("UnknownOperationException",
                            f"Unknown operation: {method} {path} ({service})", 404)
        return ApiError("UnknownOperationException",
                        f"Unknown operation: {service} {operation} is not served by "
                        "this endpoint", 404)
    action = operation or (form.get("Action") or [""])[0]
    message = f"The action {action} is not valid for this web service."
    if operation is not None:
        message = message[:-1] + f": {service} {operation} is not served by this endpoint."
    elif service != model.service_name:
        message += f" (service {service} is not served by this endpoint)"
    return ApiError("InvalidAction", message, 400)


def _form(qs: Mapping[str, list[str]], body: bytes, strict: bool) -> dict[str, list[str]]:
    """The form of a query-protocol request: its query string, then its body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if strict:
            raise ProtocolError("the request body is not UTF-8") from exc
        text = body.decode("utf-8", "replace")
    form = {k: list(v) for k, v in qs.items()}
    for key, values in parse_qs(text, keep_blank_values=True).items():
        form.setdefault(key, []).extend(values)
    return form


def _target(request: Request) -> ServiceModel:
    """The model of a request's signed service, else of the service it is most likely for."""
    qs = parse_qs(request.target.partition("?")[2], keep_blank_values=True)
    credential = sigv4.parse_authorization(request.headers.get("authorization")) or \
        sigv4.from_query(qs)
    if credential is not None and credential.service in models.SERVICES:
        return models.service(credential.service)
    return models.service(_guess(request, qs))


def _guess(request: Request, qs: Mapping[str, list[str]]) -> str:
    """The service an unsigned request is most likely for (which error shape to answer)."""
    path = request.target.partition("?")[0]
    content_type = request.headers.get("content-type", "")
    if "Action" not in qs and "x-www-form-urlencoded" not in content_type and \
            (path != "/" or request.method not in ("POST", "GET")):
        return "lambda"
    form = _form(qs, request.body, strict=False)
    version = (form.get("Version") or [""])[0]
    action = (form.get("Action") or [""])[0]
    for name in ("sts", "ec2"):
        if version == models.service(name).api_version:
            return name
    sts = models.operation_names(models.service("sts"))
    return "sts" if action in sts else "ec2"


# -- HTTP ---------------------------------------------------------------------------------
class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive: boto3's connection pool
    server_version = "hyperplane"
    sys_version = ""
    timeout = 300                      # an idle keep-alive connection closes after this
    server: Endpoint

    def setup(self) -> None:
        super().setup()
        # an answer is written as headers then body: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (40 ms a request on a kept-alive link)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._serve()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: an endpoint of a test fixture should not chatter on stderr."""

    def _serve(self) -> None:
        request_id = str(uuid.uuid4())
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, self.path, headers)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        try:
            length = -1 if chunked else int(headers.get("content-length") or 0)
            if length < -1 or (length == -1 and not chunked):
                raise ValueError(length)
        except ValueError:
            self._send(self.server.refuse(request, _bad_length(request), request_id))
            return
        if length > MAX_BODY:
            self._send(self.server.too_large(request, request_id))
            return
        body = self._read_chunked() if chunked else self.rfile.read(length)
        if body is None:
            self._send(self.server.too_large(request, request_id))
            return
        if len(body) < length:
            self.close_connection = True       # the client went away mid-body
            return
        self._send(self.server.answer(replace(request, body=body), request_id))

    def _read_chunked(self) -> bytes | None:
        """A chunked body (None: over ``MAX_BODY``; b"" and a closed connection: malformed)."""
        chunks, size = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                length = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return b""
            if length == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass                       # trailers
                return b"".join(chunks)
            size += length
            if size > MAX_BODY:
                return None
            chunks.append(self.rfile.read(length))
            self.rfile.readline(3)

    def _send(self, reply: Reply) -> None:
        if reply.stream is not None:
            self._send_stream(reply)
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD" and reply.body:
                self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


    def _send_stream(self, reply: Reply) -> None:
        """The head, then each message of ``reply.stream`` as one HTTP chunk, flushed."""
        stream = reply.stream
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for frame in stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - the head is out: the body can only stop short
            sys.stderr.write(f"hyperplane endpoint: an event stream failed:\n"
                             f"{traceback.format_exc()}")
            self.close_connection = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


def _bad_length(request: Request) -> ApiError:
    kind = _BAD_REQUEST[_target(request).service_name]
    return ApiError(kind, "The Content-Length header is not valid", 400)


def serve(endpoint: Endpoint) -> None:
    """Run ``endpoint`` until SIGTERM (or Ctrl-C), then shut it down cleanly.

    Call it from the main thread (signals are delivered there)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda _signo, _frame: stop.set())
    endpoint.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.close()
        signal.signal(signal.SIGTERM, previous)
