// Open a package from the bank: decrypt it with your private key, then verify the
// bank's signature and the claims iss, aud and exp.
//
// Needs: npm install jose@6   (P-256 and X25519 keys; ES256 and EdDSA signatures)
//
//   node open-package.mjs PACKAGE_FILE PRIVATE_JWK_FILE BANK_JWKS_FILE ISSUER AUDIENCE
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { compactDecrypt, createLocalJWKSet, importJWK, jwtVerify } from "jose";

export async function openPackage(pkg, privateJwk, bankJwks, { issuer, audience }) {
  const key = await importJWK(privateJwk, "ECDH-ES+A256KW");
  const { plaintext, protectedHeader } = await compactDecrypt(pkg.trim(), key, {
    keyManagementAlgorithms: ["ECDH-ES+A256KW"],
    contentEncryptionAlgorithms: ["A256GCM"],
  });
  if (protectedHeader.cty !== "JWT") throw new Error("not a nested JWT (cty is not JWT)");
  const { payload } = await jwtVerify(new TextDecoder().decode(plaintext), createLocalJWKSet(bankJwks), {
    issuer,
    audience,
    algorithms: ["ES256", "EdDSA"],
    requiredClaims: ["exp", "jti"],
  });
  return payload;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [pkgFile, keyFile, jwksFile, issuer, audience] = process.argv.slice(2);
  const read = (file) => readFileSync(file, "utf8");
  const claims = await openPackage(read(pkgFile), JSON.parse(read(keyFile)), JSON.parse(read(jwksFile)), {
    issuer,
    audience,
  });
  console.log(JSON.stringify(claims, null, 2));
}
