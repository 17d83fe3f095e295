'use strict';
/*
 * The built-in Node.js runtime (nodejs18.x, 20.x, 22.x): a Lambda Runtime API client
 * with node's own `http` module only, run by `lambda_vm.agent` as `node runtime.js`.
 *
 * What AWS's Node runtime (aws-lambda-nodejs-runtime-interface-client) does, in small:
 *   init    load the handler named by _HANDLER ("file.export", "dir/file.export",
 *           "file.a.b") from LAMBDA_TASK_ROOT: file (extensionless), file.js (require,
 *           or import() under a package.json of "type": "module"), file.mjs (import()),
 *           file.cjs (require), then require.resolve; a failure goes to
 *           POST /runtime/init/error as Runtime.ImportModuleError, Runtime.HandlerNotFound,
 *           Runtime.UserCodeSyntaxError, Runtime.MalformedHandlerName or the error itself.
 *   loop    GET /runtime/invocation/next (one keep-alive connection), then
 *           handler(event, context, callback): a returned promise settles the invocation;
 *           otherwise callback(err, result) does, after the event loop empties while
 *           context.callbackWaitsForEmptyEventLoop is true (and a handler that never calls
 *           back returns null once it has); context.succeed/fail/done settle at once.
 *           The result is POSTed as JSON to .../response (undefined as null), an error as
 *           {errorType, errorMessage, trace} to .../error with
 *           Lambda-Runtime-Function-Error-Type.
 *   crash   an uncaught exception (exit 129) or unhandled rejection (exit 128,
 *           Runtime.UnhandledPromiseRejection) is reported for the running invocation
 *           (or as the init error) and the process exits; the agent starts a new one.
 *   logs    console.* write "<ISO time>\t<request id>\t<LEVEL>\t<message>" lines to stdout
 *           (newlines inside a message become \r, so one entry stays one line).
 *   stream  a handler wrapped in awslambda.streamifyResponse(async (event, responseStream,
 *           context) => ...) streams its response: POST .../response with
 *           Lambda-Runtime-Function-Response-Mode: streaming and a chunked body, each
 *           responseStream.write going out as it is written; responseStream.setContentType,
 *           awslambda.HttpResponseStream.from(stream, {statusCode, headers}) (the JSON prelude
 *           and 8 NUL bytes, as AWS writes it); an error after the stream began goes in the
 *           trailers Lambda-Runtime-Function-Error-Type and -Error-Body (base64).
 */

const fs = require('fs');
const http = require('http');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');

const PREFIX = '/2018-06-01/runtime';
const [API_HOST, API_PORT] = (process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001').split(':');
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
const CONNECT_TIMEOUT_MS = 10000;

// -- errors, named as AWS names them ----------------------------------------------------
const RUNTIME_ERRORS = {};
for (const name of ['ImportModuleError', 'HandlerNotFound', 'MalformedHandlerName',
  'UserCodeSyntaxError', 'UnhandledPromiseRejection']) {
  const Kind = class extends Error {};
  Kind.prototype.name = `Runtime.${name}`;
  RUNTIME_ERRORS[name] = Kind;
}

function isError(value) {
  return util.types.isNativeError(value) || (value !== null && typeof value === 'object' &&
    typeof value.name === 'string' && typeof value.message === 'string' &&
    typeof value.stack === 'string');
}

function errorBody(error) {
  try {
    if (isError(error)) {
      return { errorType: error.name, errorMessage: error.message,
        trace: String(error.stack || '').split('\n') };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_err) {
    return { errorType: 'handled', errorMessage: 'callback called with Error argument, but ' +
      'there was a problem while retrieving one or more of its message, name, and stack' };
  }
}

function formatted(error) {
  const body = errorBody(error);
  return '\t' + JSON.stringify({ errorType: body.errorType, errorMessage: body.errorMessage,
    stack: body.trace });
}

// -- logs ---------------------------------------------------------------------------------
let currentRequestId; // undefined during init, as AWS logs it

function patchConsole() {
  const levels = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', log: 'INFO', warn: 'WARN',
    error: 'ERROR', fatal: 'FATAL' };
  for (const [method, level] of Object.entries(levels)) {
    console[method] = (message, ...params) => {
      const line = `${new Date().toISOString()}\t${currentRequestId}\t${level}\t` +
        util.format(message, ...params);
      process.stdout.write(line.replace(/\n/g, '\r') + '\n');
    };
  }
}

// -- the Runtime API ----------------------------------------------------------------------
function headerValue(value) {
  return String(value).replace(/[^\x20-\x7e]/g, '').slice(0, 1024);
}

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(body, 'utf8');
    const allHeaders = { ...(headers || {}) };
    if (data !== undefined) {
      allHeaders['Content-Type'] = 'application/json';
      allHeaders['Content-Length'] = data.length;
    }
    const req = http.request({ host: API_HOST, port: Number(API_PORT), method, path: urlPath,
      agent: keepAlive, headers: allHeaders }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function nextInvocation() {
  const deadline = Date.now() + CONNECT_TIMEOUT_MS;
  for (;;) { // the agent may still be opening its server
    try {
      return await request('GET', `${PREFIX}/invocation/next`);
    } catch (err) {
      if (err.code !== 'ECONNREFUSED' || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

function postError(urlPath, error) {
  const body = errorBody(error);
  return request('POST', urlPath, JSON.stringify(body),
    { 'Lambda-Runtime-Function-Error-Type': headerValue(body.errorType) });
}

function postResponse(requestId, result) {
  let payload;
  try {
    payload = JSON.stringify(result === undefined ? null : result);
  } catch (_err) {
    return postError(`${PREFIX}/invocation/${requestId}/error`,
      new Error('Unable to stringify response body'));
  }
  return request('POST', `${PREFIX}/invocation/${requestId}/response`,
    payload === undefined ? 'null' : payload);
}

// -- the handler --------------------------------------------------------------------------
function packageTypeModule(folder) {
  for (;;) {
    if (folder.endsWith(`${path.sep}node_modules`)) return false;
    const manifest = path.join(folder, 'package.json');
    if (fs.existsSync(manifest)) {
      try {
        return JSON.parse(fs.readFileSync(manifest, 'utf8')).type === 'module';
      } catch (_err) {
        return false;
      }
    }
    const parent = path.dirname(folder);
    if (parent === folder) return false;
    folder = parent;
  }
}

async function loadModule(appRoot, moduleRoot, module) {
  const base = path.resolve(appRoot, moduleRoot, module);
  const load = (file, esm) => (esm ? import(pathToFileURL(file).href) : require(file));
  if (fs.existsSync(base)) return load(base, false);
  const typeModule = packageTypeModule(path.dirname(base));
  if (fs.existsSync(`${base}.js`)) return load(`${base}.js`, typeModule);
  if (fs.existsSync(`${base}.mjs`)) return load(`${base}.mjs`, true);
  if (fs.existsSync(`${base}.cjs`)) return load(`${base}.cjs`, false);
  return require(require.resolve(module, { paths: [appRoot, path.resolve(appRoot, moduleRoot)] }));
}

async function loadHandler(appRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw new RUNTIME_ERRORS.MalformedHandlerName(`'${fullHandler}' is not a valid handler ` +
      'name. Use absolute paths when specifying root directories in handler names.');
  }
  const handlerString = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(handlerString));
  const match = handlerString.match(/^([^.]*)\.(.*)$/);
  if (!match) throw new RUNTIME_ERRORS.MalformedHandlerName('Bad handler');
  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, match[1]);
  } catch (err) {
    if (err instanceof SyntaxError) throw new RUNTIME_ERRORS.UserCodeSyntaxError(String(err));
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new RUNTIME_ERRORS.ImportModuleError(String(err));
    }
    throw err;
  }
  const handler = match[2].split('.').reduce((object, key) => object && object[key], app);
  if (!handler) {
    throw new RUNTIME_ERRORS.HandlerNotFound(`${fullHandler} is undefined or not exported`);
  }
  if (typeof handler !== 'function') {
    throw new RUNTIME_ERRORS.HandlerNotFound(`${fullHandler} is not a function`);
  }
  return handler;
}

// -- one invocation -----------------------------------------------------------------------
let onEmptyLoop = null; // what to do when the event loop has nothing left (beforeExit)
let crashReport = (error) => postError(`${PREFIX}/init/error`, error); // where a crash goes

function parseHeaderJson(value) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (_err) {
    return undefined;
  }
}

function buildContext(headers, settle) {
  let waitsForEmptyEventLoop = true;
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  const fail = (err) => settle(err === undefined || err === null ? 'handled' : err, undefined,
    true);
  const succeed = (result) => settle(null, result, false);
  const done = (err, result) => (err !== undefined && err !== null ? fail(err) : succeed(result));
  return {
    get callbackWaitsForEmptyEventLoop() { return waitsForEmptyEventLoop; },
    set callbackWaitsForEmptyEventLoop(value) { waitsForEmptyEventLoop = value; },
    succeed, fail, done,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseHeaderJson(headers['lambda-runtime-client-context']),
    identity: parseHeaderJson(headers['lambda-runtime-cognito-identity']),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    getRemainingTimeInMillis() { return deadline - Date.now(); },
  };
}

function invokeOnce(handler, next) {
  return new Promise((resolve) => {
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    let settled = false;
    const settle = (err, result, failed) => {
      if (settled) {
        console.error('Invocation has already been reported as done. Cannot call complete ' +
          'more than once per invocation.');
        return;
      }
      settled = true;
      onEmptyLoop = null;
      if (failed) console.error('Invoke Error', formatted(err));
      const posted = failed ? postError(`${PREFIX}/invocation/${requestId}/error`, err)
        : postResponse(requestId, result);
      posted.then(resolve, (postErr) => fatal('posting the outcome failed', postErr));
    };
    const context = buildContext(next.headers, settle);
    const finish = (err, result) => (err !== undefined && err !== null
      ? settle(err, undefined, true) : settle(null, result, false));
    const callback = (err, result) => {
      if (context.callbackWaitsForEmptyEventLoop) {
        onEmptyLoop = () => setImmediate(() => finish(err, result));
      } else {
        finish(err, result);
      }
    };
    currentRequestId = requestId;
    crashReport = (error) => postError(`${PREFIX}/invocation/${requestId}/error`, error);
    if (next.headers['lambda-runtime-trace-id']) {
      process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'];
    } else {
      delete process.env._X_AMZN_TRACE_ID;
    }
    onEmptyLoop = () => settle(null, null, false); // a handler that never calls back
    let event;
    try {
      event = JSON.parse(next.body || 'null');
      const result = handler(event, context, callback);
      if (result && typeof result.then === 'function') {
        result.then(context.succeed, context.fail);
      }
    } catch (err) {
      callback(err);
    }
  });
}

// -- response streaming ---------------------------------------------------------------------
const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';

globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream: class HttpResponseStream {
    static from(stream, prelude) {
      stream.setContentType(HTTP_INTEGRATION);
      stream.write(JSON.stringify(prelude || {}));
      stream.write(Buffer.alloc(8)); // the delimiter between the prelude and the body
      return stream;
    }
  },
};

function invokeStreaming(handler, next) {
  return new Promise((resolve) => {
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    const stream = http.request({ host: API_HOST, port: Number(API_PORT), method: 'POST',
      path: `${PREFIX}/invocation/${requestId}/response`, agent: keepAlive, headers: {
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked', 'Content-Type': 'application/octet-stream',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body' },
    }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    stream.on('error', (postErr) => fatal('posting the stream failed', postErr));
    stream.setContentType = (type) => stream.setHeader('Content-Type', type);
    const finish = (error) => {
      if (stream.writableEnded) return;
      if (error !== undefined) {
        console.error('Invoke Error', formatted(error));
        const body = errorBody(error);
        stream.addTrailers({ 'Lambda-Runtime-Function-Error-Type': headerValue(body.errorType),
          'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(body))
            .toString('base64') });
      }
      stream.end();
    };
    currentRequestId = requestId;
    crashReport = (error) => {
      finish(error);
      return new Promise((done) => stream.on('finish', done));
    };
    try {
      const context = buildContext(next.headers, () => {});
      const result = handler(JSON.parse(next.body || 'null'), stream, context);
      Promise.resolve(result).then(() => finish(), (err) => finish(err === undefined ?
        'handled' : err));
    } catch (err) {
      finish(err);
    }
  });
}

// -- the process ----------------------------------------------------------------------------
function fatal(what, error) {
  process.stderr.write(`hyperplane nodejs runtime: ${what}: ${error && error.stack || error}\n`);
  process.exit(1);
}

function crash(error, code) {
  crashReport(error).then(() => process.exit(code), () => process.exit(code));
}

function installProcessHandlers() {
  process.on('beforeExit', () => {
    const action = onEmptyLoop;
    onEmptyLoop = null;
    if (action) action();
  });
  process.on('uncaughtException', (error) => {
    console.error('Uncaught Exception', formatted(error));
    crash(error, 129);
  });
  process.on('unhandledRejection', (reason) => {
    const error = new RUNTIME_ERRORS.UnhandledPromiseRejection(
      reason === undefined || reason === null ? String(reason) : reason.toString());
    console.error('Unhandled Promise Rejection', formatted(error));
    crash(error, 128);
  });
}

async function main() {
  patchConsole();
  installProcessHandlers();
  let handler;
  try {
    handler = await loadHandler(process.env.LAMBDA_TASK_ROOT || process.cwd(),
      process.env._HANDLER || '');
  } catch (error) {
    console.error('Uncaught Exception', formatted(error));
    crash(error, 129);
    return;
  }
  const invoke = handler[STREAMING] ? invokeStreaming : invokeOnce;
  for (;;) {
    const next = await nextInvocation();
    await invoke(handler, next);
  }
}

main().catch((error) => fatal('the Runtime API failed', error));
