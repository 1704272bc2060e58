#!/usr/bin/env python3
"""Makes a realistic PREP package for benchmarks: a few thousand mostly-JSON files (the site's
json/ tree), HTML/CSS/JS, and a ~20 MB nested assets/<cut>_PREP.zip of CSV data.

usage: make_package.py OUT.(zip|tar.gz) [--seed N] [--files N] [--nested-mb N]
"""
import argparse, io, json, os, random, tarfile, zipfile, hashlib

def site(seed, nfiles, nested_mb, cut):
    rnd = random.Random(seed)
    files = {}
    files["index.html"] = ("<!doctype html><html lang=es><head><meta charset=utf-8><title>PREP</title>"
                           "<link rel=stylesheet href=css/app.css></head><body><h1>PREP</h1>"
                           "<script src=js/app.js></script></body></html>").encode()
    files["css/app.css"] = ("body{font-family:sans-serif}" * 2000).encode()
    files["js/app.js"] = ("function f(x){return x*2};" * 4000).encode()
    files["json/main.json"] = json.dumps({"fechaCorte": cut[:8], "horaCorte": cut[9:13],
                                          "totalActas": 171000, "actasCapturadas": rnd.randint(1, 171000)}).encode()
    for i in range(nfiles):
        kind = ("entidad", "distrito", "seccion")[i % 3]
        data = {"id": i, "votos": [rnd.randint(0, 100000) for _ in range(40)],
                "partidos": ["PAN", "PRI", "PRD", "PVEM", "PT", "MC", "MORENA"],
                "actas": rnd.randint(0, 5000), "hash": hashlib.sha256(str(rnd.random()).encode()).hexdigest()}
        files[f"json/{kind}/{i:05d}.json"] = json.dumps(data).encode()
    # The nested database: CSV rows with a SHA column, compressed (so ~20 MB of zip).
    csv = io.BytesIO()
    csv.write(b"CLAVE_CASILLA|CLAVE_ACTA|ID_ESTADO|VOTOS|SHA\n")
    while csv.tell() < nested_mb * 1024 * 1024 * 3:
        csv.write(f"{rnd.randint(0,10**9)}|{rnd.randint(0,10**9)}|{rnd.randint(1,32)}|{rnd.randint(0,900)}|"
                  f"{hashlib.sha256(str(rnd.random()).encode()).hexdigest()}\n".encode())
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("PRES_2024.csv", csv.getvalue())
    files[f"assets/{cut}_PREP.zip"] = nested.getvalue()
    return files

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--nested-mb", type=int, default=20)
    a = ap.parse_args()
    cut = os.path.basename(a.out)[:13] if os.path.basename(a.out)[:8].isdigit() else "20240602_2015"
    files = site(a.seed, a.files, a.nested_mb, cut)
    if a.out.endswith(".zip"):
        with zipfile.ZipFile(a.out, "w", zipfile.ZIP_DEFLATED) as z:
            for p, b in files.items():
                z.writestr(p, b)
    else:
        with tarfile.open(a.out, "w:gz") as t:
            for p, b in files.items():
                ti = tarfile.TarInfo(p); ti.size = len(b); ti.mode = 0o644
                t.addfile(ti, io.BytesIO(b))
    print(f"{a.out}: {len(files)} files, {os.path.getsize(a.out)/1e6:.1f} MB")

if __name__ == "__main__":
    main()
