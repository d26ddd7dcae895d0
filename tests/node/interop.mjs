// The partner's side of the interop test, with only the partner kit and npm packages:
// open the kit's sample packages (P-256 and X25519) with its code, check their data
// against its schemas, reproduce its sample signatures, then report to the gateway
// with v1 and v1a signatures made by the kit's code.
//
//   node interop.mjs KIT_DIR CALLBACK_URL CASE_REF SECRET_FILE ED25519_JWK_FILE
// Prints one JSON object of results; exits 1 at the first thing that does not hold.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [kit, url, caseRef, secretFile, edKeyFile] = process.argv.slice(2);
const { openPackage } = await import(pathToFileURL(join(kit, "code/node/open-package.mjs")).href);
const { signV1, signV1a, headers, send } = await import(pathToFileURL(join(kit, "code/node/sign-callback.mjs")).href);
const read = (...parts) => readFileSync(join(kit, ...parts), "utf8");
const json = (...parts) => JSON.parse(read(...parts));

function check(condition, what) {
  if (!condition) {
    console.error(`interop: ${what}`);
    process.exit(1);
  }
}

const facts = json("kit.json");
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const results = { opened: [], reports: [] };
const validators = new Map();
const validator = (name) => {
  if (!validators.has(name)) validators.set(name, ajv.compile(json("schemas", name)));
  return validators.get(name);
};

for (const file of readdirSync(join(kit, "samples")).filter((f) => f.endsWith(".jwe")).sort()) {
  const [purpose, curve] = file.replace(".jwe", "").split("-");
  const claims = await openPackage(read("samples", file), json("test-only", `test-key-${curve}.private.jwk.json`),
    json("bank-jwks.json"), { issuer: facts.bank, audience: facts.partner });
  check(JSON.stringify(claims) === JSON.stringify(json("samples", `${purpose}-claims.json`)), `${file}: other claims`);
  check(claims.test === true, `${file}: not marked test`);
  const validData = validator(`data-${purpose}.schema.json`);
  check(validData(claims.data), `${file}: data against its schema: ${ajv.errorsText(validData.errors)}`);
  const validClaims = validator("package-claims.schema.json");
  check(validClaims(claims), `${file}: claims against their schema: ${ajv.errorsText(validClaims.errors)}`);
  results.opened.push(file);
}

const sample = json("samples", "callback.json");
const stamp = Number(sample["webhook-timestamp"]);
const testSecret = read("test-only", "webhook-secret.txt").trim();
check(signV1(testSecret, sample["webhook-id"], stamp, sample.body) === sample.v1, "v1 sample signature differs");
const testKey = json("test-only", "callback-key-ed25519.private.jwk.json");
check(signV1a(testKey, sample["webhook-id"], stamp, sample.body) === sample.v1a, "v1a sample signature differs");

const now = () => Math.floor(Date.now() / 1000);
const reports = [
  ["v1", { type: "accepted", partner_reference: "NODE-1" }, (id, t, body) => signV1(readFileSync(secretFile, "utf8").trim(), id, t, body)],
  ["v1a", { type: "dispute", reason: "debtor disputes the fees" }, (id, t, body) => signV1a(JSON.parse(readFileSync(edKeyFile, "utf8")), id, t, body)],
];
for (const [scheme, fields, signer] of reports) {
  const body = JSON.stringify({ ...fields, case_ref: caseRef, occurred_at: new Date().toISOString() });
  const id = `msg_node_${scheme}_${Date.now()}`;
  const t = now();
  const answer = await send(url, body, headers(id, t, signer(id, t, body)));
  check(answer.status === 202, `${scheme} report answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  results.reports.push({ scheme, status: answer.status, state: answer.body.state });
}
console.log(JSON.stringify(results));
