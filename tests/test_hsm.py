"""Issuer keys in an HSM: the PKCS#11 security module against a throwaway SoftHSM2 token."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardos import image
from personalize import cardholders
from personalize.compiler import FACTORY_KEY, TRANSPORT_KEY
from personalize.keys import KeyRef
from terminal.uri import Pkcs11Error, parse_uri
from tests.ss import key_file, keys

ROOT = Path(__file__).resolve().parent.parent
PASS = "hsm test passphrase"
PIN, SO_PIN, LABEL = "735910", "8642097531", "sscard test"
URI = "pkcs11:token=sscard%20test"


# ---- URIs (no token needed) ------------------------------------------------------------------

def test_uri_names_token_object_and_module():
    u = parse_uri("pkcs11:token=Bureau%20HSM;object=MK_SSSE;type=secret-key?module-path=/opt/hsm.so")
    assert (u.token, u.object, u.module_path) == ("Bureau HSM", "MK_SSSE", "/opt/hsm.so")


@pytest.mark.parametrize("uri, says", [
    ("pkcs11:object=MK", "name the token"),
    ("pkcs11:token=t?pin-value=1234", "pin-value is refused"),
    ("pkcs11:token=t?pin-source=file:/pin", "pin-source is refused"),
    ("pkcs11:token=t;colour=red", "unknown path attribute 'colour'"),
    ("pkcs11:token=t;type=private", "secret keys"),
    ("keys.json", "starts with pkcs11:"),
])
def test_bad_uris_are_refused_with_the_reason(uri, says):
    with pytest.raises(Pkcs11Error, match=says):
        parse_uri(uri)


# ---- a throwaway token ------------------------------------------------------------------------

def _run(env, *args, input=None):
    return subprocess.run([sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, input=input)


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    """A SoftHSM2 token in a temp dir holding the demo issuer keys, imported with `sscard keys import-hsm`."""
    if not shutil.which("softhsm2-util"):
        pytest.fail("softhsm2 is not installed (scripts/setup.sh installs it)", pytrace=False)
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf), SSCARD_PKCS11_PIN=PIN, SSCARD_KEYS_PASSPHRASE=PASS)
    os.environ["SOFTHSM2_CONF"] = str(conf)      # this process loads the module too
    for label in (LABEL, "spare"):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
                        "--so-pin", SO_PIN], env=env, check=True, capture_output=True)
    keyfile = key_file(d / "keys.json", PASS)
    r = _run(env, "keys", "import-hsm", str(keyfile), "--token", LABEL)
    assert r.returncode == 0, r.stderr
    return {"env": env, "keyfile": str(keyfile), "dir": d}


@pytest.fixture(scope="module")
def token(hsm):
    from terminal.pkcs11 import Pkcs11Keys
    provider = Pkcs11Keys.open(URI, pin=PIN)
    yield provider
    provider.close()


def _masters():
    k = keys()
    return {n: k.value_for_plain_load(KeyRef(n)) for n in k.names()}


# ---- the module computes what the key file computes ---------------------------------------------

names = st.sampled_from(sorted(keys().names()))
factors = st.none() | st.binary(min_size=8, max_size=8)
# Levels above the card (city, province), as psam.md's two- and three-level keys have them.
higher = st.lists(st.binary(min_size=8, max_size=8), max_size=2).map(tuple)


@pytest.mark.hsm
@settings(max_examples=40, deadline=None)
@given(name=names, factor=factors, up=higher, under=names, target=names, challenge=st.binary(min_size=8, max_size=8),
       data=st.binary(max_size=40), process=st.binary(min_size=8, max_size=8), tfactor=st.binary(min_size=8, max_size=8))
def test_every_operation_equals_the_key_file(token, name, factor, up, under, target, challenge, data, process, tfactor):
    soft, ref = keys(), KeyRef(name, factor, up)
    assert token.algorithm(ref) == soft.algorithm(ref)
    assert token.version(name) == soft.version(name)
    assert token.encrypt(ref, challenge) == soft.encrypt(ref, challenge)
    assert token.mac(ref, challenge, data) == soft.mac(ref, challenge, data)
    assert token.seal(ref, data) == soft.seal(ref, data)
    assert token.session_encrypt(ref, process, challenge) == soft.session_encrypt(ref, process, challenge)
    prefix, t = data[:5], KeyRef(target, tfactor, up)
    assert token.seal_key_record(KeyRef(under, factor), prefix, t) == soft.seal_key_record(KeyRef(under, factor), prefix, t)
    assert token.value_for_plain_load(t) == soft.value_for_plain_load(t)
    assert token.audit_mac(data) == token.audit_mac(data) != soft.audit_mac(data)


@pytest.mark.hsm
def test_master_keys_are_sensitive_and_only_the_transport_key_extractable(token):
    from PyKCS11 import LowLevel as LL
    s = token._session
    seen = {}
    for h in s.findObjects([(LL.CKA_CLASS, LL.CKO_SECRET_KEY), (LL.CKA_TOKEN, True)]):
        label, extractable, sensitive = s.getAttributeValue(h, [LL.CKA_LABEL, LL.CKA_EXTRACTABLE, LL.CKA_SENSITIVE])
        seen[label.strip()] = (bool(extractable), bool(sensitive))
        template = LL.ckattrlist(1)
        template[0].SetType(LL.CKA_VALUE)
        assert s.lib.C_GetAttributeValue(s.session, h, template) == LL.CKR_ATTRIBUTE_SENSITIVE
    masters = set(keys().names())
    assert masters <= set(seen)
    assert {n for n, (x, _) in seen.items() if x} == {TRANSPORT_KEY}
    assert all(sens for _, sens in seen.values())


@pytest.mark.hsm
def test_an_undiversified_non_extractable_key_is_never_given_out_in_clear(token):
    with pytest.raises(Pkcs11Error, match="MK_SSSE is non-extractable"):
        token.value_for_plain_load(KeyRef("MK_SSSE"))


@pytest.mark.hsm
def test_keys_list_token_names_keys_never_values(hsm):
    r = _run(hsm["env"], "keys", "list", "--token", LABEL)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines] == sorted(keys().names())
    assert "TRANSPORT      3des  version 1  extractable" in r.stdout
    for value in _masters().values():
        assert value.hex() not in r.stdout.lower()


@pytest.mark.hsm
def test_import_refuses_a_token_that_has_the_keys_already_and_writes_nothing(hsm):
    r = _run(hsm["env"], "keys", "import-hsm", hsm["keyfile"], "--token", LABEL)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["Error: token sscard test already holds a key named 'DK_CIVIL'"]


@pytest.mark.hsm
def test_a_wrong_pin_is_one_line(hsm):
    r = _run(dict(hsm["env"], SSCARD_PKCS11_PIN="000000"), "keys", "list", "--token", "spare")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["Error: token spare: login refused (CKR_PIN_INCORRECT)"]
    assert "000000" not in r.stderr


@pytest.mark.hsm
def test_an_sm4_profile_is_refused_at_start_naming_the_mechanism(hsm, tmp_path):
    csv_path = tmp_path / "holders.csv"
    cardholders.write_csv(str(csv_path), cardholders.generate(3, seed=2))
    out = tmp_path / "cards"
    r = _run(hsm["env"], "perso", "run", "--profile", "sm4-3.00", "--cardholders", str(csv_path),
             "--keys", URI, "--out-dir", str(out))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "Error: PKCS#11 module /usr/lib/softhsm/libsofthsm2.so has no CKM_SM4_ECB mechanism: "
        "profile ss-3.00-sm4 needs SM4 keys"]
    assert not out.exists()                  # refused before any card, journal or folder


@pytest.mark.hsm
def test_a_token_missing_a_profile_key_is_refused_at_start(hsm, tmp_path):
    csv_path = tmp_path / "holders.csv"
    cardholders.write_csv(str(csv_path), cardholders.generate(2, seed=2))
    r = _run(hsm["env"], "perso", "run", "--cardholders", str(csv_path), "--keys", "pkcs11:token=spare",
             "--out-dir", str(tmp_path / "cards"))
    assert r.returncode != 0
    assert "token spare has no key named 'DK_CIVIL'" in r.stderr
    assert not (tmp_path / "cards").exists()


# ---- a whole batch ------------------------------------------------------------------------------

def _content(path: Path) -> dict:
    """What a card holds (its store and COS settings), whatever else an image file may record."""
    doc = image.to_document(image.load(path))
    return {k: doc[k] for k in ("config", "eeprom_used", "entries", "commit_buffer")}


@pytest.mark.hsm
def test_a_batch_with_the_hsm_makes_the_cards_the_key_file_makes(hsm, tmp_path):
    csv_path = tmp_path / "holders.csv"
    cardholders.write_csv(str(csv_path), cardholders.generate(12, seed=7))
    made = {}
    for name, keys_arg in (("file", hsm["keyfile"]), ("hsm", URI)):
        r = _run(hsm["env"], "perso", "run", "--cardholders", str(csv_path), "--keys", keys_arg,
                 "--out-dir", str(tmp_path / name), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["done"] == 12
        made[name] = sorted((tmp_path / name).glob("*.json"))
    assert [p.name for p in made["file"]] == [p.name for p in made["hsm"]] and len(made["hsm"]) == 12
    for a, b in zip(made["file"], made["hsm"]):
        assert _content(a) == _content(b), a.name
    audit = (tmp_path / "hsm" / "perso-audit.jsonl").read_text()
    for value in _masters().values():
        assert value.hex() not in audit.lower() and value.hex().upper() not in audit
    # The chain is keyed inside the token: it verifies with the token and not with the key file.
    log, journal = tmp_path / "hsm" / "perso-audit.jsonl", tmp_path / "hsm" / "perso-journal.sqlite"
    ok = _run(hsm["env"], "audit", "verify", str(log), "--journal", str(journal), "--keys", URI)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    other = _run(hsm["env"], "audit", "verify", str(log), "--journal", str(journal), "--keys", hsm["keyfile"])
    assert other.returncode == 1, other.stdout + other.stderr


# ---- no master key in the memory of a batch run -------------------------------------------------

# FACTORY is FF…FF, published by the chip vendor and found in any process's constant data;
# TRANSPORT is loaded into every fresh DF in clear (plain 80 D4), so the host must hold it (README).
IN_CLEAR_BY_DESIGN = {FACTORY_KEY, TRANSPORT_KEY}


def _memory_hits(pid: int, needles: dict[str, bytes]) -> dict[str, set[str]]:
    """Which needles occur in which mappings of a process (every readable one: Python's heap and the
    PKCS#11 library's share the same malloc arenas, so no region is left out)."""
    hits: dict[str, set[str]] = {}
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1]:
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(lo)
                blob = mem.read(hi - lo)
            except OSError:                         # [vvar] and the like cannot be read
                continue
            for name, needle in needles.items():
                if needle in blob:
                    hits.setdefault(name, set()).add(fields[5] if len(fields) > 5 else "anonymous")
    return hits


def _paused_batch_memory(hsm, tmp_path, keys_arg: str) -> dict[str, set[str]]:
    csv_path = tmp_path / "holders.csv"
    cardholders.write_csv(str(csv_path), cardholders.generate(6, seed=11))
    out = tmp_path / "cards"
    out.mkdir()
    # Each master whole and each of its halves (the retail MAC's K1 is a half).
    needles = {f"{n} {part}": v for n, value in _masters().items() if n not in IN_CLEAR_BY_DESIGN
               for part, v in (("whole", value), ("K1", value[:8]), ("K2", value[8:]))}
    child = subprocess.Popen([sys.executable, "-m", "tests.hsm_child", keys_arg, str(csv_path), str(out)],
                             cwd=ROOT, env=hsm["env"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "paused"
        hits = _memory_hits(child.pid, needles)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done 6"
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    return hits


@pytest.mark.hsm
def test_no_master_key_is_in_the_memory_of_a_batch_run_with_the_hsm(hsm, tmp_path):
    hits = _paused_batch_memory(hsm, tmp_path, URI)
    assert hits == {}, f"master key bytes found in: {hits}"


@pytest.mark.hsm
def test_the_memory_search_finds_the_masters_of_a_key_file_run(hsm, tmp_path):
    # The same search over a run with the key file: every master is there, so the search works.
    hits = _paused_batch_memory(hsm, tmp_path, hsm["keyfile"])
    masters = {n for n in _masters() if n not in IN_CLEAR_BY_DESIGN}
    assert {h.split()[0] for h in hits if h.endswith("whole")} == masters


# ---- where the module and the PIN come from ------------------------------------------------------

@pytest.mark.hsm
@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_module_comes_from_the_option_or_the_environment(hsm, how):
    env, args = dict(hsm["env"]), ["keys", "list", "--token", LABEL]
    if how == "option":
        args = ["--pkcs11-module", "/nonexistent/libhsm.so"] + args
    else:
        env["SSCARD_PKCS11_MODULE"] = "/nonexistent/libhsm.so"
    r = _run(env, *args)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "Error: PKCS#11 module /nonexistent/libhsm.so: cannot load it (no such file)"]


@pytest.mark.hsm
def test_the_pin_is_prompted_when_the_environment_has_none(hsm):
    env = {k: v for k, v in hsm["env"].items() if k != "SSCARD_PKCS11_PIN"}
    r = _run(env, "keys", "list", "--token", LABEL, input=PIN + "\n")
    assert r.returncode == 0, r.stderr
    assert "PIN of token sscard test" in r.stderr and PIN not in r.stderr + r.stdout


@pytest.mark.hsm
def test_reader_workers_can_share_one_token_session(token):
    # One worker thread per reader calls the same provider; its calls must not interleave.
    import threading
    soft, results, errors = keys(), {}, []

    def worker(n: int) -> None:
        try:
            for i in range(30):
                ref = KeyRef(sorted(soft.names())[(n + i) % 5], bytes([n, i]) * 4)
                data = bytes([i]) * (i % 17)
                results[(n, i)] = (token.mac(ref, bytes(8), data) == soft.mac(ref, bytes(8), data),
                                   token.seal_key_record(ref, b"\x01" * 5, ref) == soft.seal_key_record(ref, b"\x01" * 5, ref))
        except Exception as e:                    # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 120 and all(all(r) for r in results.values())


@pytest.mark.hsm
def test_a_key_of_the_wrong_length_is_refused_before_anything_is_imported(hsm, token):
    from cardos.crypto import Algorithm
    from terminal.pkcs11 import import_keys
    masters = {"AAA": (Algorithm.TDES, bytes(range(16)), 1), "ZZZ": (Algorithm.TDES, bytes(24), 1)}
    with pytest.raises(Pkcs11Error, match="ZZZ: a 3des key is 16 bytes, not 24"):
        import_keys("pkcs11:token=spare", masters, set(), pin=PIN)
    _assert_spare_is_empty()


@pytest.mark.hsm
def test_an_import_the_token_refuses_part_way_leaves_the_token_as_it_was(hsm, token, monkeypatch):
    from cardos.crypto import Algorithm
    from terminal import pkcs11
    real = pkcs11._key_template

    def second_is_bad(name, *args):           # the token itself refuses the second object
        return real(name, *args) + ([(pkcs11.LL.CKA_KEY_TYPE, 0x7FFF)] if name == "BBB" else [])

    monkeypatch.setattr(pkcs11, "_key_template", second_is_bad)
    masters = {"AAA": (Algorithm.TDES, bytes(range(16)), 1), "BBB": (Algorithm.TDES, bytes(range(16, 32)), 1)}
    with pytest.raises(Pkcs11Error, match="import failed .*nothing was imported"):
        pkcs11.import_keys("pkcs11:token=spare", masters, set(), pin=PIN)
    _assert_spare_is_empty()


def _assert_spare_is_empty():
    from terminal.pkcs11 import Pkcs11Keys
    spare = Pkcs11Keys.open("pkcs11:token=spare", pin=PIN)
    try:
        assert spare.names() == [] and not spare.holds("AAA")
    finally:
        spare.close()


@pytest.mark.hsm
def test_a_card_personalized_with_the_hsm_takes_a_psam_made_from_the_key_file(hsm, tmp_path):
    """The other half of a real transaction: a kiosk with a PSAM (made from the bureau's key file)
    authenticates to a card whose keys the HSM made, writes EF0D, and reads it back."""
    csv_path = tmp_path / "holders.csv"
    cardholders.write_csv(str(csv_path), cardholders.generate(1, seed=11))
    made = _run(hsm["env"], "perso", "run", "--cardholders", str(csv_path), "--keys", URI,
                "--out-dir", str(tmp_path / "cards"), "--json")
    assert made.returncode == 0, made.stderr
    card = next(p for p in (tmp_path / "cards").glob("*.json"))
    psam = tmp_path / "psam.json"
    r = _run(hsm["env"], "image", "new", str(psam), "--psam", "--keys", hsm["keyfile"], "--region", "330300")
    assert r.returncode == 0, r.stderr
    w = _run(hsm["env"], "card", "write", "--image", str(card), "--psam", str(psam),
             "--set", "person_id=330300000099", "--json")
    assert w.returncode == 0, w.stdout + w.stderr
    read = _run(hsm["env"], "read", "--image", str(card), "--json")
    assert read.returncode == 0, read.stderr
    assert "330300000099" in read.stdout


@pytest.mark.hsm
def test_the_emv_rsa_keys_sign_inside_the_token_as_the_key_file_does_and_never_leave(token):
    from personalize.emv_keys import CA_KEY, ISSUER_KEY
    from PyKCS11 import LowLevel as LL
    soft = keys()
    for name in (CA_KEY, ISSUER_KEY):
        n, e = soft.rsa_public(name)
        assert token.rsa_public(name) == (n, e)
        block = b"\x6a" + bytes(range(1, (n.bit_length() + 7) // 8 - 1)) + b"\xbc"
        assert token.rsa_private_op(name, block) == soft.rsa_private_op(name, block)
        sensitive, extractable = token._session.getAttributeValue(token._rsa[name], [LL.CKA_SENSITIVE, LL.CKA_EXTRACTABLE])
        assert sensitive and not extractable


@pytest.mark.hsm
def test_a_dda_card_made_with_the_token_is_the_one_the_key_file_makes(token):
    """The ICC key's seed is the issuer key's signature, made inside the token: same key, same card."""
    from personalize import emv_icc, virtual
    from tests.ss import prof
    token.require_profile(prof("dda"))
    made = []
    for provider in (keys(), token):
        emv_icc._generate.cache_clear()
        made.append(image.to_document(virtual.make(prof("dda"), cardholders.sample(), provider, b"\x02" * 8)))
    assert made[0] == made[1]
