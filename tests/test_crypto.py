"""Crypto against published vectors, and the properties the card relies on."""

from hypothesis import given
from hypothesis import strategies as st

from cardos.crypto import Algorithm, decrypt_ecb, diversify, encrypt_ecb, mac4, pad80, retail_mac, seal, unseal


def test_sm4_gbt32907_example():
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert encrypt_ecb(Algorithm.SM4, key, key).hex().upper() == "681EDF34D206965E86B3E94F536E4246"
    assert decrypt_ecb(Algorithm.SM4, key, bytes.fromhex("681EDF34D206965E86B3E94F536E4246")) == key


def test_retail_mac_iso9797_alg3_vector():
    # BouncyCastle ISO9797Alg3MacTest: two-key 3DES, zero IV, "Hello World !!!!" unpadded.
    key = bytes.fromhex("7CA110454A1A6E570131D9619DC1376E")
    assert retail_mac(key, bytes(8), b"Hello World !!!!").hex().upper() == "F09B856213BAB83B"


def test_des_fips81_vector():
    # FIPS 81 / classic DES example: K=0123456789ABCDEF, "Now is t" -> 3FA40E8A984D4815.
    assert encrypt_ecb(Algorithm.DES, bytes.fromhex("0123456789ABCDEF"), b"Now is t").hex().upper() == "3FA40E8A984D4815"


def test_pad80_adds_a_whole_block_when_aligned():
    assert pad80(bytes(8), 8) == bytes(8) + b"\x80" + bytes(7)
    assert pad80(b"\x01\x02", 8) == b"\x01\x02\x80" + bytes(5)


def test_mac4_is_the_first_four_bytes_of_the_retail_mac_with_challenge_iv():
    key = bytes.fromhex("7CA110454A1A6E570131D9619DC1376E")
    data = bytes.fromhex("04D6810005") + b"\x11"
    full = retail_mac(key, bytes.fromhex("0102030400000000"), pad80(data, 8))
    assert mac4(Algorithm.TDES, key, bytes.fromhex("01020304"), data) == full[:4]


def test_diversification_halves_are_d_and_not_d():
    mk = bytes(range(16))
    d = bytes.fromhex("0102030405060708")
    k = diversify(Algorithm.TDES, mk, d)
    assert k[:8] == encrypt_ecb(Algorithm.TDES, mk, d)
    assert k[8:] == encrypt_ecb(Algorithm.TDES, mk, bytes(b ^ 0xFF for b in d))
    assert diversify(Algorithm.SM4, mk, d) == encrypt_ecb(Algorithm.SM4, mk, d + bytes(b ^ 0xFF for b in d))


@given(st.sampled_from([Algorithm.TDES, Algorithm.SM4]), st.binary(min_size=0, max_size=60))
def test_seal_round_trip(alg, data):
    key = bytes(range(16))
    sealed = seal(alg, key, data)
    assert len(sealed) % alg.block == 0
    assert unseal(alg, key, sealed) == data
