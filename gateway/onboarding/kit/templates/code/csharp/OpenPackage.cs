// Open a package from the bank: decrypt it with your private key, then verify the
// bank's signature and the claims iss, aud and exp.
//
// Needs: dotnet add package jose-jwt (5.x). jose-jwt has no X25519 key agreement and no
// EdDSA: send the bank a P-256 key, and ask for ES256 signatures (the bank's default).
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Jose;

public static class OpenPackage
{
    public static IDictionary<string, object> Open(
        string package, string privateJwk, string bankJwks, string issuer, string audience)
    {
        var mapper = JWT.DefaultSettings.JsonMapper;
        Jwk myKey = Jwk.FromJson(privateJwk, mapper);
        string signedToken = JWT.Decode(package.Trim(), myKey, JweAlgorithm.ECDH_ES_A256KW, JweEncryption.A256GCM);
        var kid = (string)JWT.Headers(signedToken)["kid"];
        Jwk bankKey = JwkSet.FromJson(bankJwks, mapper).Keys.First(k => k.KeyId == kid);
        string json = JWT.Decode(signedToken, bankKey, JwsAlgorithm.ES256);
        var claims = mapper.Parse<Dictionary<string, object>>(json);
        if (!Equals(claims["iss"], issuer) || !Equals(claims["aud"], audience))
        {
            throw new InvalidOperationException("the package is not from the bank or not for you");
        }
        if (DateTimeOffset.FromUnixTimeSeconds(Convert.ToInt64(claims["exp"])) < DateTimeOffset.UtcNow)
        {
            throw new InvalidOperationException("the package has expired");
        }
        return claims;
    }

    public static void Main(string[] args)
    {
        var claims = Open(File.ReadAllText(args[0]), File.ReadAllText(args[1]), File.ReadAllText(args[2]),
            args[3], args[4]);
        Console.WriteLine(JWT.DefaultSettings.JsonMapper.Serialize(claims));
    }
}
