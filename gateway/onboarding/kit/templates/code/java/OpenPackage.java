// Open a package from the bank: decrypt it with your private key, then verify the
// bank's signature and the claims iss, aud and exp.
//
// Needs: com.nimbusds:nimbus-jose-jwt (10.x). P-256 keys and ES256 work as they are;
// X25519 keys and EdDSA signatures also need com.google.crypto.tink:tink on the class
// path, so send the bank a P-256 key unless you add it.
//
//   java OpenPackage.java PACKAGE_FILE PRIVATE_JWK_FILE BANK_JWKS_FILE ISSUER AUDIENCE
import com.nimbusds.jose.EncryptionMethod;
import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWEAlgorithm;
import com.nimbusds.jose.JWEObject;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.crypto.ECDHDecrypter;
import com.nimbusds.jose.jwk.ECKey;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.source.ImmutableJWKSet;
import com.nimbusds.jose.proc.JWSVerificationKeySelector;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.SignedJWT;
import com.nimbusds.jwt.proc.DefaultJWTClaimsVerifier;
import com.nimbusds.jwt.proc.DefaultJWTProcessor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;

public final class OpenPackage {
    public static JWTClaimsSet open(String pkg, String privateJwk, String bankJwks, String issuer, String audience)
            throws Exception {
        JWEObject envelope = JWEObject.parse(pkg.trim());
        if (!JWEAlgorithm.ECDH_ES_A256KW.equals(envelope.getHeader().getAlgorithm())
                || !EncryptionMethod.A256GCM.equals(envelope.getHeader().getEncryptionMethod())) {
            throw new JOSEException("unexpected algorithms: " + envelope.getHeader().toJSONObject());
        }
        envelope.decrypt(new ECDHDecrypter(ECKey.parse(privateJwk)));
        SignedJWT signed = envelope.getPayload().toSignedJWT();
        if (signed == null) {
            throw new JOSEException("not a nested JWT");
        }
        DefaultJWTProcessor<SecurityContext> processor = new DefaultJWTProcessor<>();
        processor.setJWSKeySelector(new JWSVerificationKeySelector<>(
                Set.of(JWSAlgorithm.ES256, JWSAlgorithm.EdDSA), new ImmutableJWKSet<>(JWKSet.parse(bankJwks))));
        processor.setJWTClaimsSetVerifier(new DefaultJWTClaimsVerifier<>(
                audience, new JWTClaimsSet.Builder().issuer(issuer).build(), Set.of("exp", "jti")));
        return processor.process(signed, null);
    }

    public static void main(String[] args) throws Exception {
        JWTClaimsSet claims = open(Files.readString(Path.of(args[0])), Files.readString(Path.of(args[1])),
                Files.readString(Path.of(args[2])), args[3], args[4]);
        System.out.println(claims.toString());
    }
}
