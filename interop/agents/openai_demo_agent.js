// An agent in the style of OpenAI's realtime Twilio demo (Node, the `ws` package): it does
// nothing until `start`, keeps `start.streamSid`, and then answers like a model streaming
// audio deltas: every response is one second of a 440 Hz tone sent as five 200 ms deltas,
// faster than real time, each followed by a mark WITHOUT a mark object
// (`{"event":"mark","streamSid":sid}`, as the demo sends them), and every response after
// the first is preceded by a `clear` (the demo's truncation when the caller speaks).
//
// Run: NODE_PATH=target/interop-node/node_modules node openai_demo_agent.js --port PORT
// (any path)
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

const NAME = "openai-demo";
const SAMPLE_RATE = 8000;
const TONE_HZ = 440;
const DELTA_MS = 200;
const DELTAS_PER_RESPONSE = 5;
const RESPONSE_EVERY_MS = 1200;

function portArgument() {
  const i = process.argv.indexOf("--port");
  const value = i >= 0 ? process.argv[i + 1] : process.env.AGENT_PORT || "0";
  const port = Number.parseInt(value, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`${NAME}: bad --port ${value}`);
    process.exit(2);
  }
  return port;
}

// G.711 mu-law encoding of one 16-bit linear sample.
function linearToUlaw(sample) {
  const BIAS = 0x84;
  const CLIP = 32635;
  const sign = sample < 0 ? 0x80 : 0;
  let s = Math.min(Math.abs(sample), CLIP) + BIAS;
  let exponent = 7;
  for (let mask = 0x4000; exponent > 0 && !(s & mask); mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

// One delta of tone, base64 mu-law as the realtime API's `response.audio.delta` carries it.
function toneDelta(offset) {
  const samples = (SAMPLE_RATE * DELTA_MS) / 1000;
  const bytes = Buffer.alloc(samples);
  for (let i = 0; i < samples; i++) {
    const n = offset + i;
    bytes[i] = linearToUlaw(Math.round(0.4 * 32767 * Math.sin((2 * Math.PI * TONE_HZ * n) / SAMPLE_RATE)));
  }
  return bytes.toString("base64");
}

function report(fields) {
  const sorted = {};
  for (const key of Object.keys(fields).sort()) sorted[key] = fields[key];
  process.stdout.write(JSON.stringify(sorted) + "\n");
}

function handleConnection(twilioConn) {
  const session = { streamSid: null, callSid: null, latestMediaTimestamp: 0 };
  const counts = { media_in: 0, media_out: 0, marks_sent: 0, marks_echoed: 0, clears_sent: 0, responses: 0 };
  let timer = null;
  let sampleOffset = 0;

  const jsonSend = (obj) => {
    if (twilioConn.readyState === twilioConn.OPEN) twilioConn.send(JSON.stringify(obj));
  };

  // One "model response": deltas in a quick burst, each with a nameless mark.
  const respond = () => {
    if (counts.responses > 0) {
      jsonSend({ event: "clear", streamSid: session.streamSid });
      counts.clears_sent++;
    }
    counts.responses++;
    for (let d = 0; d < DELTAS_PER_RESPONSE; d++) {
      setTimeout(() => {
        jsonSend({ event: "media", streamSid: session.streamSid, media: { payload: toneDelta(sampleOffset) } });
        sampleOffset += (SAMPLE_RATE * DELTA_MS) / 1000;
        counts.media_out++;
        jsonSend({ event: "mark", streamSid: session.streamSid });
        counts.marks_sent++;
      }, d * 40);
    }
  };

  twilioConn.on("message", (data) => {
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      return;
    }
    switch (msg.event) {
      case "start":
        session.streamSid = msg.start.streamSid;
        session.callSid = msg.start.callSid;
        session.customParameters = msg.start.customParameters || {};
        session.latestMediaTimestamp = 0;
        respond();
        timer = setInterval(respond, RESPONSE_EVERY_MS);
        break;
      case "media":
        if (session.streamSid) {
          counts.media_in++;
          session.latestMediaTimestamp = msg.media.timestamp;
        }
        break;
      case "mark":
        counts.marks_echoed++;
        break;
      case "stop":
        if (timer) clearInterval(timer);
        timer = null;
        break;
      default:
        break;
    }
  });

  twilioConn.on("close", (code) => {
    if (timer) clearInterval(timer);
    if (!session.streamSid) {
      report({ agent: NAME, event: "connection_without_start", close_code: code });
      return;
    }
    report({
      agent: NAME,
      event: "call_ended",
      call_sid: session.callSid,
      stream_sid: session.streamSid,
      tenant_id: (session.customParameters || {}).tenant_id || null,
      route_id: (session.customParameters || {}).route_id || null,
      close_code: code,
      ...counts,
      // Every mark it sends has no name: the service is to drop and count each one.
      nameless_marks_sent: counts.marks_sent,
    });
  });
  twilioConn.on("error", (e) => console.error(`${NAME}: ${e.message}`));
}

const server = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, maxPayload: 1 << 20 });
wss.on("connection", handleConnection);
server.listen(portArgument(), "127.0.0.1", () => {
  process.stdout.write(`READY ${NAME} 127.0.0.1:${server.address().port}\n`);
});
