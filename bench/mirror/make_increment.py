#!/usr/bin/env python3
"""Makes an increment package for a site made by ../make_package.py: a new json/main.json and
new contents for N of its json/{entidad,distrito,seccion}/NNNNN.json files (same paths, other
counts) — what a PREP cut typically changes when the database zip is not re-sent.

usage: make_increment.py OUT.zip --cut YYYYMMDD_HHMM [--files-in-site N] [--changed N] [--seed N]
"""
import argparse, hashlib, json, os, random, zipfile

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--cut", required=True)
    ap.add_argument("--files-in-site", type=int, default=3000)
    ap.add_argument("--changed", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    files = {"json/main.json": json.dumps({"fechaCorte": a.cut[:8], "horaCorte": a.cut[9:13],
                                           "totalActas": 171000,
                                           "actasCapturadas": rnd.randint(1, 171000)}).encode()}
    for i in sorted(rnd.sample(range(a.files_in_site), min(a.changed, a.files_in_site))):
        kind = ("entidad", "distrito", "seccion")[i % 3]
        data = {"id": i, "votos": [rnd.randint(0, 100000) for _ in range(40)],
                "partidos": ["PAN", "PRI", "PRD", "PVEM", "PT", "MC", "MORENA"],
                "actas": rnd.randint(0, 5000), "hash": hashlib.sha256(str(rnd.random()).encode()).hexdigest()}
        files[f"json/{kind}/{i:05d}.json"] = json.dumps(data).encode()
    with zipfile.ZipFile(a.out, "w", zipfile.ZIP_DEFLATED) as z:
        for p, b in files.items():
            z.writestr(p, b)
    print(f"{a.out}: {len(files)} files, {os.path.getsize(a.out)/1e6:.2f} MB")

if __name__ == "__main__":
    main()
