// Signs with a private key of the hsmlink token through Java's SunPKCS11
// provider, and verifies the signature with the JDK's own provider against
// the certificate stored on the token.
//
// java HsmlinkSign.java CONFIG PIN ALIAS ALGORITHM
// (used by tests/tests/clients.rs; the README shows the same steps)
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;
import java.util.Collections;

public class HsmlinkSign {
    public static void main(String[] args) throws Exception {
        Provider token = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(token);
        KeyStore store = KeyStore.getInstance("PKCS11", token);
        store.load(null, args[1].toCharArray());
        System.out.println("aliases: " + Collections.list(store.aliases()));
        PrivateKey key = (PrivateKey) store.getKey(args[2], null);
        Certificate cert = store.getCertificate(args[2]);
        byte[] data = "signed from Java through hsmlink".getBytes("UTF-8");

        Signature signer = Signature.getInstance(args[3], token);
        signer.initSign(key);
        signer.update(data);
        byte[] signature = signer.sign();

        Signature verifier = Signature.getInstance(args[3]);
        if (verifier.getProvider() == token) {
            throw new IllegalStateException("the JDK picked the token to verify");
        }
        verifier.initVerify(cert.getPublicKey());
        verifier.update(data);
        System.out.println(args[3] + " signature verified by the JDK: " + verifier.verify(signature));
    }
}
