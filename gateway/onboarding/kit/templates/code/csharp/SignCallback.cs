// Sign a status report for the bank (Standard Webhooks).
//
// v1: HMAC-SHA256 with the whsec_ secret the bank gave you: the base class library alone.
// v1a: Ed25519 with your key, whose public half is in the key set the bank holds: .NET has
// no Ed25519, so this uses BouncyCastle (dotnet add package BouncyCastle.Cryptography).
using System;
using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;

public static class SignCallback
{
    static byte[] Content(string msgId, long timestamp, string body)
    {
        return Encoding.UTF8.GetBytes(msgId + "." + timestamp + "." + body);
    }

    // "v1,<base64 HMAC-SHA256>" over "{id}.{timestamp}.{body}".
    public static string SignV1(string secret, string msgId, long timestamp, string body)
    {
        byte[] key = Convert.FromBase64String(secret.StartsWith("whsec_") ? secret.Substring(6) : secret);
        using (var mac = new HMACSHA256(key))
        {
            return "v1," + Convert.ToBase64String(mac.ComputeHash(Content(msgId, timestamp, body)));
        }
    }

    // "v1a,<base64 Ed25519>"; seed is the private JWK's "d" member, decoded from base64url.
    public static string SignV1a(byte[] seed, string msgId, long timestamp, string body)
    {
        var signer = new Ed25519Signer();
        signer.Init(true, new Ed25519PrivateKeyParameters(seed, 0));
        byte[] content = Content(msgId, timestamp, body);
        signer.BlockUpdate(content, 0, content.Length);
        return "v1a," + Convert.ToBase64String(signer.GenerateSignature());
    }
}
