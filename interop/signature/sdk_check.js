// Runs Twilio's Node helper (`twilio.validateRequest`) on the URL-variant vectors of
// tests/fixtures/signature-url-variants.json and prints, per vector id, whether it accepts
// the signature (computed over `signed`) for the URL as `received`.
//
//   node sdk_check.js FIXTURE            prints {"id": true|false, ...}
//   node sdk_check.js FIXTURE --check    exits 1 unless every result is the recorded one
'use strict';
const fs = require('fs');
const twilio = require('twilio');

const fixture = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const params = Object.fromEntries(fixture.params);
const got = {};
for (const v of fixture.vectors) {
  const signature = twilio.getExpectedTwilioSignature(fixture.auth_token, v.signed, params);
  let valid;
  try {
    valid = twilio.validateRequest(fixture.auth_token, signature, v.received, params);
  } catch (e) {
    // `new URL()` throws on some URLs (an out-of-range port): not valid.
    valid = false;
  }
  got[v.id] = Boolean(valid);
}
if (process.argv.includes('--check')) {
  const wrong = fixture.vectors.filter((v) => got[v.id] !== v.node).map((v) => v.id);
  if (wrong.length) {
    console.log(`node twilio disagrees with the recorded results: ${wrong.join(', ')}`);
    process.exit(1);
  }
  console.log(`node twilio: ${fixture.vectors.length} vectors as recorded`);
} else {
  console.log(JSON.stringify(got));
}
