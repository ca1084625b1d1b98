"""Offline data authentication keys of the issuer (EMV 4.3 Book 2 §5): the certification
authority key, the issuer key, the issuer public key certificate and signed static data.

[ours] The toolkit plays the payment system's CA: `sscard keys new` generates a test CA key
(1152 bits) and an issuer key (1024 bits) into the key file and publishes the CA public key in
clear beside them (RID A000000333, index 01). Certificates and signatures use EMV's recovery
format with SHA-1; the RSA operation itself is the provider's, so an HSM can stand behind it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CA_KEY, ISSUER_KEY = "EMV_CA", "EMV_ISSUER"
CA_BITS, ISSUER_BITS = 1152, 1024
RID, CA_INDEX = bytes.fromhex("A000000333"), 0x01
SHA1, RSA = 0x01, 0x01


def generate() -> dict[str, bytes]:
    """A fresh CA and issuer key pair, as PKCS#8 DER."""
    return {CA_KEY: _der(rsa.generate_private_key(65537, CA_BITS)),
            ISSUER_KEY: _der(rsa.generate_private_key(65537, ISSUER_BITS))}


def _der(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@lru_cache(maxsize=8)
def _numbers(der: bytes) -> rsa.RSAPrivateNumbers:
    # Loading checks the key (several ms); every card of a batch signs with the same two keys.
    return serialization.load_der_private_key(der, None).private_numbers()


def public_numbers(der: bytes) -> tuple[int, int]:
    """(modulus, exponent) of a PKCS#8 private key."""
    pub = _numbers(der).public_numbers
    return pub.n, pub.e


# A card's compilation and its read-back each sign the same blocks, and the issuer certificate is one block
# for a whole batch; the operation is deterministic, so its answers are kept (they are public signatures).
@lru_cache(maxsize=256)
def private_op(der: bytes, block: bytes) -> bytes:
    """The RSA private-key operation on one block of the modulus length (EMV signs by recovery)."""
    nums = _numbers(der)
    n = nums.public_numbers.n
    size = (n.bit_length() + 7) // 8
    c = int.from_bytes(block, "big")
    if len(block) != size or c >= n:
        raise ValueError("the block does not fit the modulus")
    # Chinese remainder theorem: the same result as c^d mod n, about three times sooner.
    mp, mq = pow(c, nums.dmp1, nums.p), pow(c, nums.dmq1, nums.q)
    return (mq + nums.q * ((nums.iqmp * (mp - mq)) % nums.p)).to_bytes(size, "big")


def _bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def issuer_certificate(keys, pan: str, expiry_mmyy: str, serial: bytes = b"\x00\x00\x01") -> dict[int, bytes]:
    """8F, 90, 92, 9F32: the issuer public key certificate the CA signs (Book 2 §5.3, table 6)."""
    mod, exp = keys.rsa_public(ISSUER_KEY)
    modulus, exponent = _bytes(mod), _bytes(exp)
    issuer_id = bytes.fromhex(pan[:8].ljust(8, "F"))
    head = bytes([0x02]) + issuer_id + bytes.fromhex(expiry_mmyy) + serial + bytes([SHA1, RSA, len(modulus), len(exponent)])
    cert, remainder = certificate(keys, CA_KEY, head, modulus, exponent)
    out = {0x8F: bytes([CA_INDEX]), 0x90: cert, 0x9F32: exponent}
    if remainder:
        out[0x92] = remainder
    return out


def certificate(keys, signer: str, head: bytes, modulus: bytes, exponent: bytes, signed_too: bytes = b"") -> tuple[bytes, bytes]:
    """A public key certificate in EMV's recovery format (Book 2 tables 6 and 14): the signer's
    signature of 6A ‖ head ‖ the key's leftmost bytes (BB-padded) ‖ SHA-1 ‖ BC, the hash also over
    the remainder, the exponent and signed_too; returns it and the remainder."""
    n, _ = keys.rsa_public(signer)
    room = (n.bit_length() + 7) // 8 - len(head) - 22
    leftmost, remainder = modulus[:room].ljust(room, b"\xbb"), modulus[room:]
    digest = hashlib.sha1(head + leftmost + remainder + exponent + signed_too).digest()
    return keys.rsa_private_op(signer, b"\x6a" + head + leftmost + digest + b"\xbc"), remainder


def signed_static_data(keys, static_data: bytes, dac: bytes = b"\xda\xc1") -> bytes:
    """93: the issuer's signature of the static data (Book 2 §5.4, table 7)."""
    n, _ = keys.rsa_public(ISSUER_KEY)
    size = (n.bit_length() + 7) // 8
    head = bytes([0x03, SHA1]) + dac + b"\xbb" * (size - 26)
    digest = hashlib.sha1(head + static_data).digest()
    return keys.rsa_private_op(ISSUER_KEY, b"\x6a" + head + digest + b"\xbc")


# Published demo keys, for tests and demos only, like the demo master keys.
DEMO_CA = bytes.fromhex(
    "308202BF020100300D06092A864886F70D0101010500048202A9308202A502010002819100B616D9276C4E782B32FD67"
    "7FAA1E05EA1B070322F1FBBD731523529614E00DFC10A6A9644670D029F7E14DB9575E1F55B75F270034FA155A7048D8"
    "4206B6D8059FAC0C74DEA2E2EE919A080B53FC52EB4E78C3B41962D33184ECA840896F8F66E5AD337B4E10ECBA533833"
    "26C446877D98AF1BE3F2196FEAE25CB2957A44E825A72A6DCD900CEE489D61390F68B3C83302030100010281903575A5"
    "D1AE39A78C3F4F2898D1B038DA4F8F127BAB01D6D037CF840AAE1C4DDEC860B5F0CBC1894C190B9BCF23786DC8B3AA8A"
    "FFC38DFCC0EDA0656595250F6D2F40CAF370FDEF93CDB4DF84F86BB0D3C8FD92D4E20AE553CBD2562D3735A6546E7438"
    "CC18ADA3E80D23F01A3113DF781296281FE884F90F4CC4E3763B6E63146B00E16E60132261F080E51AD5689D11024900"
    "F1A22364DDE611A2CD9CF31800D0AC61990D2309AB2C944A8BFC29B8C6DCF3E7F4411C6095CCA7FCABB60AA69F279C20"
    "D65ACA474ECC08B4DB2B02522DA053BF97FFC11E8E0E59BB024900C0EA6622C51BFFDB49220396901422C21F48157215"
    "51B730233D3726EBB63EF82B6C0C9EEA948762C6A6D55DD529574E054C9C8BA73D56FCE8EE9555FA443AFDDA61A58DC0"
    "9007E90249008BE245833B42D9AADA45A6259B3332D83D76717643764752F0BF469805E81BFB8857B949E0EEDDC154D6"
    "CA4BB38F86BF2BD8DB89748081F9D177909C6A758A863C447F546500C1C90249008DEDE5A6BF0D92776A9EB3B519DB36"
    "974B1C656AC1749529BD4354483632A6B13E8107E802FDB37D60596DB0D31ACF387F7D95CEC903BFF3E20B65A313B50F"
    "11A4912293DF9017C102485C07C4EA15F2D098A7940FEEE8BF4A025C0F9E15FE33D4C1E9B3261E97C91CD07B1E5C20F1"
    "827D19E216BB2DECB6D18FC066B43902D3906449BC44C61846DC91609365163A16BAF0"
)
DEMO_ISSUER = bytes.fromhex(
    "30820278020100300D06092A864886F70D0101010500048202623082025E02010002818100D3A4A20E965781125FD75B"
    "DDA7A65285381AE4E8E4DA2A8F47F4B043BB63DAB54E9D7E2613607D2EBDEFAD8666DFC09A111D86ABE329BCF96C5F89"
    "918E3DB2EC3D95CAEE645D56908E8F4CD7C6CF0B4C3D16E055515BBB66AB381948B5A4E6135DBB7594154C452C59A001"
    "A7A4FCEC321A48497C55DBAD33C8218C08274826DF020301000102818044AEA4B8BF295E85ABFCA39F670C9EB304E615"
    "6B4EF94DDE79A77A9C406FC3461B6118D31A6EB1B13D8A4E71D368C1843E11AAE6952DB259EF4581CB6EB1AF224B8AF0"
    "05C0EE2ED35DC4724861EFDC87140F4C2A39D29E5AED807B4AA24A560DA168CEFAA3A727890AFC89CFB06BFCE41AF31C"
    "4BBCE34C715981A62200831D01024100FFBCAB2313E9AA777A0AA64E1D5F7334608F42DB882088BA5F1FD79188A55487"
    "6838E56DF013EB1B18D1B0525345870A789FBF1BFDEA1DC4096D9921A38B13BF024100D3DC5AF587323E289FE8445AE8"
    "753EEFD805FFDEEB8087338B8F697EF7F9EE601A68E5541832DF6EF7440753F1B6D986AD2CCF87AA6E88FA18E528ED14"
    "3734E1024100A6149FCB9305FFD7C1A122E9BDF79BF89AF0CEC9853923B26D4E5F8FBAFF2BCB182B430C478A97F7AC01"
    "99918D54ACE366FCCF7EDD426A7C426733B87DDE373F02410099415DCB1EF1896579C75B2B27DD2899F77ADF8D326ED7"
    "5EC2260BFA7D079F1886023B6289DEC322525C33B0D5B99FC17CA45DBB95DE3FD82B0A1A80E58ECA01024100D505FD0B"
    "0B120A6028CAE2DD709B06B632D0313C6712BE2950F95DF6498B52EB9D7B3F1E669E96ABF6B1BBD4597F0C7430DAECEB"
    "3AFBDB52734031361B475543"
)
DEMO = {CA_KEY: DEMO_CA, ISSUER_KEY: DEMO_ISSUER}
