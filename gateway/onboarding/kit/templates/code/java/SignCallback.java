// Sign a status report for the bank (Standard Webhooks): the JDK alone (Java 15+).
//
// v1: HMAC-SHA256 with the whsec_ secret the bank gave you.
// v1a: Ed25519 with your key, whose public half is in the key set the bank holds.
//
//   java SignCallback.java v1 SECRET_FILE BODY_FILE [ID TIMESTAMP]
//   java SignCallback.java v1a PRIVATE_ED25519_JWK_FILE BODY_FILE [ID TIMESTAMP]
//
// It prints the headers to send with the body. Given ID and TIMESTAMP (those of a sample
// callback of the kit), it must print that sample's signature.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.spec.EdECPrivateKeySpec;
import java.security.spec.NamedParameterSpec;
import java.util.Base64;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public final class SignCallback {
    static byte[] content(String msgId, long timestamp, String body) {
        return (msgId + "." + timestamp + "." + body).getBytes(StandardCharsets.UTF_8);
    }

    /** "v1,<base64 HMAC-SHA256>" over "{id}.{timestamp}.{body}". */
    public static String signV1(String secret, String msgId, long timestamp, String body) throws Exception {
        byte[] key = Base64.getDecoder().decode(secret.replaceFirst("^whsec_", ""));
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        return "v1," + Base64.getEncoder().encodeToString(mac.doFinal(content(msgId, timestamp, body)));
    }

    /** "v1a,<base64 Ed25519>" over "{id}.{timestamp}.{body}", with an OKP/Ed25519 private JWK. */
    public static String signV1a(String privateJwk, String msgId, long timestamp, String body) throws Exception {
        Matcher d = Pattern.compile("\"d\"\\s*:\\s*\"([A-Za-z0-9_-]+)\"").matcher(privateJwk);
        if (!d.find()) {
            throw new IllegalArgumentException("no \"d\" in the private JWK");
        }
        byte[] raw = Base64.getUrlDecoder().decode(d.group(1));
        PrivateKey key = KeyFactory.getInstance("Ed25519")
                .generatePrivate(new EdECPrivateKeySpec(NamedParameterSpec.ED25519, raw));
        Signature signer = Signature.getInstance("Ed25519");
        signer.initSign(key);
        signer.update(content(msgId, timestamp, body));
        return "v1a," + Base64.getEncoder().encodeToString(signer.sign());
    }

    public static void main(String[] args) throws Exception {
        String credential = Files.readString(Path.of(args[1])).trim();
        String body = Files.readString(Path.of(args[2]));
        String msgId = args.length > 4 ? args[3] : "msg_" + UUID.randomUUID().toString().replace("-", "");
        long timestamp = args.length > 4 ? Long.parseLong(args[4]) : System.currentTimeMillis() / 1000;
        String signature = args[0].equals("v1")
                ? signV1(credential, msgId, timestamp, body)
                : signV1a(credential, msgId, timestamp, body);
        System.out.println("content-type: application/json");
        System.out.println("webhook-id: " + msgId);
        System.out.println("webhook-timestamp: " + timestamp);
        System.out.println("webhook-signature: " + signature);
    }
}
