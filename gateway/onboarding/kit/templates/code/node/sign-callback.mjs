// Sign a status report for the bank (Standard Webhooks) and send it.
//
// v1 (HMAC-SHA256 with the whsec_ secret the bank gave you): npm install standardwebhooks
// v1a (Ed25519 with your key, whose public half is in the key set the bank holds): node:crypto only
//
//   node sign-callback.mjs v1 SECRET_FILE BODY_FILE [URL]
//   node sign-callback.mjs v1a PRIVATE_ED25519_JWK_FILE BODY_FILE [URL]
//
// Without URL it prints the headers; with URL it POSTs the body and prints the answer.
import { createPrivateKey, randomUUID, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Webhook } from "standardwebhooks";

// "v1,<base64 HMAC-SHA256>" over "{id}.{timestamp}.{body}"; timestamp in seconds.
export function signV1(secret, msgId, timestamp, body) {
  return new Webhook(secret).sign(msgId, new Date(timestamp * 1000), body);
}

// "v1a,<base64 Ed25519>" over "{id}.{timestamp}.{body}", with node:crypto alone.
export function signV1a(privateJwk, msgId, timestamp, body) {
  const key = createPrivateKey({ key: privateJwk, format: "jwk" });
  return "v1a," + sign(null, Buffer.from(`${msgId}.${timestamp}.${body}`), key).toString("base64");
}

export function headers(msgId, timestamp, signature) {
  return {
    "content-type": "application/json",
    "webhook-id": msgId, // unique per event; a retry of the same event reuses it
    "webhook-timestamp": String(timestamp),
    "webhook-signature": signature,
  };
}

export async function send(url, body, signedHeaders) {
  const answer = await fetch(url, { method: "POST", body, headers: signedHeaders });
  return { status: answer.status, body: await answer.json() };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [scheme, credentialFile, bodyFile, url] = process.argv.slice(2);
  const body = readFileSync(bodyFile, "utf8");
  const credential = readFileSync(credentialFile, "utf8").trim();
  const msgId = `msg_${randomUUID()}`;
  const timestamp = Math.floor(Date.now() / 1000);
  const signature =
    scheme === "v1" ? signV1(credential, msgId, timestamp, body) : signV1a(JSON.parse(credential), msgId, timestamp, body);
  const signed = headers(msgId, timestamp, signature);
  console.log(JSON.stringify(url ? await send(url, body, signed) : signed, null, 2));
}
