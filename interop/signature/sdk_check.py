"""Runs Twilio's Python helper (`twilio.request_validator.RequestValidator`) on the URL-variant
vectors of tests/fixtures/signature-url-variants.json and prints, per vector id, whether it
accepts the signature (computed over `signed`) for the URL as `received`.

    python3 sdk_check.py FIXTURE            # prints {"id": true|false, ...}
    python3 sdk_check.py FIXTURE --check    # exits 1 unless every result is the recorded one
"""
import json
import sys

from twilio.request_validator import RequestValidator


def results(fixture):
    validator = RequestValidator(fixture["auth_token"])
    params = dict(fixture["params"])
    out = {}
    for v in fixture["vectors"]:
        signature = validator.compute_signature(v["signed"], params)
        try:
            out[v["id"]] = bool(validator.validate(v["received"], params, signature))
        except ValueError:
            # urlparse rejects some URLs (an out-of-range port): not valid.
            out[v["id"]] = False
    return out


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        fixture = json.load(f)
    got = results(fixture)
    if "--check" in sys.argv[2:]:
        wrong = [v["id"] for v in fixture["vectors"] if got[v["id"]] != v["python"]]
        if wrong:
            print("python twilio disagrees with the recorded results:", ", ".join(wrong))
            sys.exit(1)
        print(f"python twilio: {len(got)} vectors as recorded")
    else:
        print(json.dumps(got))


main()
