// A Node.js handler with a dependency installed by the build (npm, from package.json).
const net = require("net");
const { greet } = require("greeting");

const ping = () => new Promise((resolve, reject) => {
  const socket = net.connect(+process.env.REDIS_PORT, process.env.REDIS_HOST);
  socket.setTimeout(2000, () => reject(new Error("redis timed out")));
  socket.on("error", reject);
  socket.on("connect", () => socket.write("PING\r\n"));
  socket.on("data", (data) => { socket.end(); resolve(data.toString().trim()); });
});

exports.handler = async (event, context) => ({
  message: greet(event.name || "world"),
  redis: await ping(),
  requestId: context.awsRequestId,
  remainingMs: context.getRemainingTimeInMillis(),
  node: process.version,
});
