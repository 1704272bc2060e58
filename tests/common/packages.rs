//! PREP-like packages for tests and benchmarks, and a corpus of hostile or broken ones.
//!
//! - [`Site`], [`full_site`], [`increment`], [`big_site`]: deterministic site trees (same cut and
//!   seed, same bytes) shaped like `shared/fixtures/README.md` describes: pages, css/js/img/fonts,
//!   `json/main.json` with the cut fields, one JSON per entity and district, the results CSVs in
//!   the PREP `|` format, and `assets/<cut>_PREP.zip`, the nested database zip.
//! - [`zip_bytes`], [`tar_gz_bytes`]: archives written by hand (Info-ZIP-like zip with directory
//!   entries, extra fields and Unix modes; GNU-tar-like tar with 10 KiB records, then gzip), so
//!   that the hostile corpus can set every header field instead of patching opaque output.
//! - [`hostile_corpus`]: packages difusor must reject (with the `ExtractError::kind()` label it
//!   must report) or accept after neutralising (names decoded, modes normalised).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;

use flate2::{Compress, Compression, FlushCompress};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Cut times
// ---------------------------------------------------------------------------------------------

/// A cut time, the institute's local time, as package names carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CutTime {
    pub y: u16,
    pub mo: u8,
    pub d: u8,
    pub h: u8,
    pub mi: u8,
}

impl CutTime {
    pub const fn new(y: u16, mo: u8, d: u8, h: u8, mi: u8) -> Self {
        CutTime { y, mo, d, h, mi }
    }

    /// 2024-06-02 20:15, the first cut of the examples.
    pub const fn example() -> Self {
        CutTime::new(2024, 6, 2, 20, 15)
    }

    /// The cut of a package name (`20240602_2015_PREP…`), if it has one.
    pub fn parse(file_name: &str) -> Option<CutTime> {
        let b = file_name.as_bytes();
        if b.len() < 18 || b[8] != b'_' || !file_name[13..].starts_with("_PREP") {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u16> {
            let s = file_name.get(r)?;
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        Some(CutTime::new(
            num(0..4)?,
            num(4..6)? as u8,
            num(6..8)? as u8,
            num(9..11)? as u8,
            num(11..13)? as u8,
        ))
    }

    /// `20240602_2015`.
    pub fn stem(&self) -> String {
        format!(
            "{:04}{:02}{:02}_{:02}{:02}",
            self.y, self.mo, self.d, self.h, self.mi
        )
    }

    /// The package name: `name(".zip")` is `20240602_2015_PREP.zip`, `name("_DIP_QROO.tar.gz")`
    /// is `20240602_2015_PREP_DIP_QROO.tar.gz`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}_PREP{suffix}", self.stem())
    }

    /// `fechaCorte`: `02/06/2024`.
    pub fn fecha(&self) -> String {
        format!("{:02}/{:02}/{:04}", self.d, self.mo, self.y)
    }

    /// `horaCorte`: `20:15`.
    pub fn hora(&self) -> String {
        format!("{:02}:{:02}", self.h, self.mi)
    }

    /// The same cut `n` minutes later (or earlier, for negative `n`), across days and months.
    pub fn plus_minutes(&self, n: i64) -> CutTime {
        let total = self.days() * 1440 + self.h as i64 * 60 + self.mi as i64 + n;
        let (days, mins) = (total.div_euclid(1440), total.rem_euclid(1440));
        let (y, mo, d) = civil_from_days(days);
        CutTime::new(y as u16, mo, d, (mins / 60) as u8, (mins % 60) as u8)
    }

    /// Minutes since 20:00 of the election night this cut belongs to (a night runs 24 hours).
    pub fn minutes_into_night(&self) -> i64 {
        let m = self.h as i64 * 60 + self.mi as i64;
        (m - 20 * 60).rem_euclid(1440)
    }

    /// Seconds since the epoch, reading the local time as UTC-6 (for tar mtimes).
    pub fn unix_time(&self) -> u64 {
        let secs = (self.days() * 1440 + self.h as i64 * 60 + self.mi as i64) * 60 + 6 * 3600;
        secs.max(0) as u64
    }

    /// MS-DOS (time, date) as zip headers hold them.
    pub fn dos(&self) -> (u16, u16) {
        let date = (self.y.saturating_sub(1980) << 9) | ((self.mo as u16) << 5) | self.d as u16;
        let time = ((self.h as u16) << 11) | ((self.mi as u16) << 5);
        (time, date)
    }

    fn days(&self) -> i64 {
        days_from_civil(self.y as i64, self.mo as i64, self.d as i64)
    }
}

/// Days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and the same everywhere.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// 64 lowercase hex digits, like the SHA column of the results CSV.
    pub fn hex64(&mut self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for _ in 0..4 {
            let mut x = self.next_u64();
            for _ in 0..16 {
                out.push(HEX[(x & 15) as usize] as char);
                x >>= 4;
            }
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The site
// ---------------------------------------------------------------------------------------------

/// The 32 entities, in INE order (`01` Aguascalientes … `32` Zacatecas).
pub const ENTIDADES: [&str; 32] = [
    "Aguascalientes",
    "Baja California",
    "Baja California Sur",
    "Campeche",
    "Coahuila",
    "Colima",
    "Chiapas",
    "Chihuahua",
    "Ciudad de México",
    "Durango",
    "Guanajuato",
    "Guerrero",
    "Hidalgo",
    "Jalisco",
    "México",
    "Michoacán",
    "Morelos",
    "Nayarit",
    "Nuevo León",
    "Oaxaca",
    "Puebla",
    "Querétaro",
    "Quintana Roo",
    "San Luis Potosí",
    "Sinaloa",
    "Sonora",
    "Tabasco",
    "Tamaulipas",
    "Tlaxcala",
    "Veracruz",
    "Yucatán",
    "Zacatecas",
];

/// Federal districts per entity (2023 distritación): 300 in all.
const DISTRITOS_POR_ENTIDAD: [u16; 32] = [
    3, 9, 2, 2, 8, 2, 13, 9, 22, 4, 15, 8, 7, 20, 40, 11, 5, 3, 14, 10, 16, 6, 4, 7, 7, 7, 6, 8, 3,
    19, 6, 4,
];

const PARTIDOS: [&str; 9] = [
    "PAN",
    "PRI",
    "PRD",
    "PVEM",
    "PT",
    "MC",
    "MORENA",
    "NO_REGISTRADAS",
    "NULOS",
];

/// The elections a package carries: (CSV file stem, CSV title).
const ELECTIONS: [(&str, &str); 3] = [
    ("PRES_2024", "PRESIDENCIA"),
    ("SEN_2024", "SENADURIAS"),
    ("DIP_FED_2024", "DIPUTACIONES FEDERALES"),
];

/// Captured actas through the night, from INE 2018 (minutes after 20:00 → actas of 156,808):
/// 535 at 21:04, 14,118 at 23:52, 54,252 at 03:52, ~100k at noon, 146,744 (93.6 %) at 21:00.
const S_CURVE: [(f64, f64); 6] = [
    (0.0, 0.0),
    (64.0, 535.0),
    (232.0, 14_118.0),
    (472.0, 54_252.0),
    (960.0, 100_000.0),
    (1440.0, 146_744.0),
];

/// Fraction of all actas captured at a cut (strictly increasing over a night).
pub fn captured_fraction(cut: &CutTime) -> f64 {
    let t = cut.minutes_into_night() as f64;
    for w in S_CURVE.windows(2) {
        let ((t0, a0), (t1, a1)) = (w[0], w[1]);
        if t <= t1 {
            return (a0 + (a1 - a0) * (t - t0) / (t1 - t0)) / 156_808.0;
        }
    }
    S_CURVE[5].1 / 156_808.0
}

struct Distrito {
    /// `001`…`300`.
    id: String,
    entidad: usize,
    actas: u64,
    lista_nominal: u64,
    /// In [0, 1): where this district's rounding falls, so that early in the night some
    /// districts already report an acta and the national count is about `f × total`.
    phase: f64,
    /// Per-mille share of each party of `PARTIDOS`.
    shares: [u64; 9],
}

/// A site's fixed content, all drawn from one seed; the cut only moves the counts.
pub struct Site {
    seed: u64,
    distritos: Vec<Distrito>,
    pages: Vec<(String, String)>,
    statics: Vec<(String, Vec<u8>)>,
}

/// The pages: (path, title). Subdirectory pages link `../css/…`.
const PAGES: [(&str, &str); 23] = [
    ("index.html", "Inicio"),
    ("presidencia.html", "Presidencia"),
    ("senadurias.html", "Senadurías"),
    ("diputaciones.html", "Diputaciones"),
    ("participacion.html", "Participación ciudadana"),
    ("base-de-datos.html", "Base de datos"),
    ("preguntas-frecuentes.html", "Preguntas frecuentes"),
    ("acerca-del-prep.html", "Acerca del PREP"),
    ("glosario.html", "Glosario"),
    ("avance.html", "Avance de captura"),
    ("presidencia/entidad.html", "Presidencia por entidad"),
    ("presidencia/distrito.html", "Presidencia por distrito"),
    ("presidencia/seccion.html", "Presidencia por sección"),
    ("senadurias/entidad.html", "Senadurías por entidad"),
    (
        "senadurias/circunscripcion.html",
        "Senadurías por circunscripción",
    ),
    ("diputaciones/entidad.html", "Diputaciones por entidad"),
    ("diputaciones/distrito.html", "Diputaciones por distrito"),
    (
        "diputaciones/circunscripcion.html",
        "Diputaciones por circunscripción",
    ),
    ("ayuda/descarga.html", "Descarga de la base de datos"),
    ("ayuda/accesibilidad.html", "Accesibilidad"),
    ("ayuda/contacto.html", "Contacto"),
    ("avisos/privacidad.html", "Aviso de privacidad"),
    ("avisos/terminos.html", "Términos de uso"),
];

const WORDS: [&str; 24] = [
    "actas",
    "casilla",
    "cómputo",
    "resultados",
    "preliminares",
    "votación",
    "distrito",
    "sección",
    "entidad",
    "captura",
    "digitalización",
    "verificación",
    "publicación",
    "candidatura",
    "partido",
    "coalición",
    "lista nominal",
    "participación",
    "ciudadana",
    "consejo",
    "electoral",
    "información",
    "corte",
    "avance",
];

fn words(rng: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick::<&str>(&WORDS));
        if rng.below(9) == 0 {
            let _ = write!(s, " {}", rng.below(100_000));
        }
    }
    s
}

impl Site {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut distritos = Vec::with_capacity(300);
        for (e, &n) in DISTRITOS_POR_ENTIDAD.iter().enumerate() {
            for _ in 0..n {
                let actas = rng.range(420, 720);
                let mut shares = [0u64; 9];
                for s in shares.iter_mut().take(7) {
                    *s = rng.range(10, 400);
                }
                shares[7] = rng.range(0, 3);
                shares[8] = rng.range(10, 40);
                distritos.push(Distrito {
                    id: format!("{:03}", distritos.len() + 1),
                    entidad: e,
                    actas,
                    lista_nominal: actas * rng.range(480, 620),
                    phase: rng.below(1 << 20) as f64 / (1u64 << 20) as f64,
                    shares,
                });
            }
        }
        let pages = PAGES
            .iter()
            .map(|(path, title)| (path.to_string(), page(path, title, &mut rng)))
            .collect();
        let statics = statics(&mut rng);
        Site {
            seed,
            distritos,
            pages,
            statics,
        }
    }

    pub fn total_actas(&self) -> u64 {
        self.distritos.iter().map(|d| d.actas).sum()
    }

    /// Actas captured at `cut`, national (the sum of the districts).
    pub fn actas_capturadas(&self, cut: &CutTime) -> u64 {
        let f = captured_fraction(cut);
        self.distritos.iter().map(|d| captured(d, f)).sum()
    }

    /// `json/main.json` for `cut`.
    pub fn main_json(&self, cut: &CutTime) -> Vec<u8> {
        let total = self.total_actas();
        let cap = self.actas_capturadas(cut);
        format!(
            "{{\"fechaCorte\":\"{}\",\"horaCorte\":\"{}\",\"zonaHoraria\":\"UTC-6\",\
             \"archivoCorte\":\"{}\",\"cortePrueba\":false,\"totalActas\":{total},\
             \"actasCapturadas\":{cap},\"porcentajeActasCapturadas\":\"{:.4}\",\
             \"actasContabilizadas\":{},\"entidades\":32,\"distritos\":{}}}\n",
            cut.fecha(),
            cut.hora(),
            cut.name(".zip"),
            pct(cap, total),
            cap * 97 / 100,
            self.distritos.len(),
        )
        .into_bytes()
    }

    /// Every `json/**` file of `cut`: main.json, 32 entities, 300 districts.
    pub fn json_files(&self, cut: &CutTime) -> Vec<(String, Vec<u8>)> {
        let f = captured_fraction(cut);
        let mut out = vec![("json/main.json".to_string(), self.main_json(cut))];
        for (e, nombre) in ENTIDADES.iter().enumerate() {
            let ds: Vec<&Distrito> = self.distritos.iter().filter(|d| d.entidad == e).collect();
            let total: u64 = ds.iter().map(|d| d.actas).sum();
            let cap: u64 = ds.iter().map(|d| captured(d, f)).sum();
            let mut votos = [0u64; 9];
            for d in &ds {
                for (v, x) in votos.iter_mut().zip(votes(d, f)) {
                    *v += x;
                }
            }
            let mut s = format!(
                "{{\"fechaCorte\":\"{}\",\"horaCorte\":\"{}\",\"id\":\"{:02}\",\"nombre\":\"{nombre}\",\
                 \"totalActas\":{total},\"actasCapturadas\":{cap},\"porcentajeActasCapturadas\":\"{:.4}\",\
                 \"votos\":{},\"distritos\":[",
                cut.fecha(),
                cut.hora(),
                e + 1,
                pct(cap, total),
                votos_json(&votos),
            );
            for (i, d) in ds.iter().enumerate() {
                let _ = write!(s, "{}\"{}\"", if i > 0 { "," } else { "" }, d.id);
            }
            s.push_str("]}\n");
            out.push((format!("json/entidad/{:02}.json", e + 1), s.into_bytes()));
        }
        for d in &self.distritos {
            let cap = captured(d, f);
            let s = format!(
                "{{\"fechaCorte\":\"{}\",\"horaCorte\":\"{}\",\"distrito\":\"{}\",\"entidad\":\"{:02}\",\
                 \"nombreEntidad\":\"{}\",\"totalActas\":{},\"actasCapturadas\":{cap},\
                 \"porcentajeActasCapturadas\":\"{:.4}\",\"listaNominal\":{},\"votos\":{}}}\n",
                cut.fecha(),
                cut.hora(),
                d.id,
                d.entidad + 1,
                ENTIDADES[d.entidad],
                d.actas,
                pct(cap, d.actas),
                d.lista_nominal,
                votos_json(&votes(d, f)),
            );
            out.push((format!("json/distrito/{}.json", d.id), s.into_bytes()));
        }
        out
    }

    /// The results CSVs of `cut` (`<ELECTION>.csv` plus a Latin-1 CRLF `LEEME.txt`), with at
    /// most `max_rows` actas each.
    pub fn csv_files(&self, cut: &CutTime, max_rows: u64) -> Vec<(String, Vec<u8>)> {
        let rows = self.actas_capturadas(cut).min(max_rows);
        let mut out = Vec::new();
        for (i, (stem, title)) in ELECTIONS.iter().enumerate() {
            let seed = self.seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
            out.push((
                format!("{stem}.csv"),
                self.results_csv(cut, title, rows, seed).into_bytes(),
            ));
        }
        out.push(("LEEME.txt".to_string(), leeme()));
        out
    }

    /// `assets/<cut>_PREP.zip`: the downloadable database, a zip of the CSVs.
    pub fn database_zip(&self, cut: &CutTime, max_rows: u64) -> (String, Vec<u8>) {
        let files = self.csv_files(cut, max_rows);
        (
            format!("assets/{}", cut.name(".zip")),
            zip_bytes_at(&files, cut),
        )
    }

    /// The whole site at `cut` (see [`full_site`]).
    pub fn full(&self, cut: &CutTime) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .pages
            .iter()
            .map(|(p, html)| (p.clone(), html.clone().into_bytes()))
            .collect();
        out.extend(self.statics.iter().cloned());
        out.extend(self.json_files(cut));
        for (name, data) in self.csv_files(cut, 300) {
            out.push((format!("csv/{name}"), data));
        }
        out.push(self.database_zip(cut, 300));
        out
    }

    /// What changed at `cut` (see [`increment`]).
    pub fn increment(&self, cut: &CutTime) -> Vec<(String, Vec<u8>)> {
        let mut out = self.json_files(cut);
        out.push(self.database_zip(cut, 300));
        out
    }

    fn results_csv(&self, cut: &CutTime, title: &str, rows: u64, seed: u64) -> String {
        let mut rng = Rng::new(seed ^ cut.unix_time());
        let esperadas = self.total_actas();
        let capturadas = self.actas_capturadas(cut);
        let contabilizadas = capturadas * 97 / 100;
        let mut s = String::with_capacity(rows as usize * 330 + 2048);
        let _ = write!(
            s,
            "{title}\n{} {} (UTC-6)\n\
             ACTAS_ESPERADAS|ACTAS_REGISTRADAS|ACTAS_FUERA_CATALOGO|ACTAS_CAPTURADAS|\
             PORCENTAJE_ACTAS_CAPTURADAS|ACTAS_CONTABILIZADAS|PORCENTAJE_ACTAS_CONTABILIZADAS|\
             PORCENTAJE_ACTAS_INCONSISTENCIAS|ACTAS_NO_CONTABILIZADAS|\
             LISTA_NOMINAL_ACTAS_CONTABILIZADAS|TOTAL_VOTOS_C_CS|TOTAL_VOTOS_S_CS|\
             PORCENTAJE_PARTICIPACION_CIUDADANA\n\
             {esperadas}|{capturadas}|0|{capturadas}|{:.4}|{contabilizadas}|{:.4}|{:.4}|{}|{}|{}|{}|{:.4}\n\n",
            cut.fecha(),
            cut.hora(),
            pct(capturadas, esperadas),
            pct(contabilizadas, esperadas),
            2.5 + rng.below(1000) as f64 / 1000.0,
            capturadas - contabilizadas,
            contabilizadas * 560,
            contabilizadas * 330,
            contabilizadas * 328,
            58.0 + rng.below(10_000) as f64 / 1000.0,
        );
        s.push_str(
            "CLAVE_CASILLA|CLAVE_ACTA|ID_ENTIDAD|ENTIDAD|ID_DISTRITO_FEDERAL|DISTRITO_FEDERAL|\
             SECCION|ID_CASILLA|TIPO_CASILLA|EXT_CONTIGUA|UBICACION_CASILLA|TIPO_ACTA|\
             TOTAL_BOLETAS_SOBRANTES|TOTAL_PERSONAS_VOTARON|TOTAL_REP_PARTIDO_CI_VOTARON|\
             TOTAL_VOTOS_SACADOS|PAN|PRI|PRD|PVEM|PT|MC|MORENA|NO_REGISTRADAS|NULOS|\
             TOTAL_VOTOS_CALCULADOS|LISTA_NOMINAL|OBSERVACIONES|MECANISMOS_TRASLADO|SHA|\
             FECHA_HORA_ACOPIO|FECHA_HORA_CAPTURA|FECHA_HORA_VERIFICACION|ORIGEN|DIGITALIZACION|\
             TIPO_DOCUMENTO|COTEJADA\n",
        );
        const PLACEHOLDERS: [&str; 4] = ["SIN DATO", "-", "ILEGIBLE", "N/A"];
        const TIPOS: [&str; 4] = ["B", "C", "E", "S"];
        const OBS: [&str; 4] = [
            "",
            "ALGUN DATO ILEGIBLE O SIN DATO",
            "TODOS LOS CAMPOS ILEGIBLES O SIN DATO",
            "EXCEDE LISTA NOMINAL",
        ];
        let day = format!("{:04}-{:02}-{:02}", cut.y, cut.mo, cut.d);
        for _ in 0..rows {
            let d = &self.distritos[rng.below(self.distritos.len() as u64) as usize];
            let seccion = rng.range(1, 6000);
            let tipo = rng.pick(&TIPOS);
            let id_casilla = rng.range(1, 9);
            let _ = write!(
                s,
                "=\"{:02}{:04}{tipo}{:02}00\"|{:02}{:04}{tipo}{:02}{:02}|{:02}|{}|{}|DISTRITO {}|{seccion}|\
                 {id_casilla}|{tipo}|0|{}|{}|{}|{}|{}|",
                d.entidad + 1,
                seccion,
                id_casilla,
                d.entidad + 1,
                seccion,
                id_casilla,
                rng.range(1, 6),
                d.entidad + 1,
                ENTIDADES[d.entidad].to_uppercase(),
                d.id,
                d.id,
                rng.range(1, 2),
                rng.range(2, 4),
                rng.range(100, 450),
                rng.range(150, 600),
                rng.range(0, 8),
            );
            let mut total = 0;
            let _ = write!(s, "{}|", rng.range(150, 600));
            for share in d.shares {
                if rng.below(33) == 0 {
                    s.push_str(rng.pick::<&str>(&PLACEHOLDERS));
                } else {
                    let v = rng.below(share + 1);
                    total += v;
                    let _ = write!(s, "{v}");
                }
                s.push('|');
            }
            let _ = write!(
                s,
                "{total}|{}|{}|{}|",
                rng.range(300, 750),
                rng.pick(&OBS),
                rng.range(1, 2)
            );
            rng.hex64(&mut s);
            let (h, m) = (rng.range(18, 23), rng.range(0, 59));
            let _ = write!(
                s,
                "|{day} {h:02}:{m:02}:00|{day} {h:02}:{:02}:{:02}|{day} {h:02}:{:02}:{:02}|{}|{}|ACTA PREP|{}",
                (m + 5).min(59),
                rng.below(60),
                (m + 9).min(59),
                rng.below(60),
                if rng.below(3) == 0 { "CASILLA" } else { "CATD" },
                if rng.below(2) == 0 {
                    "ESCANER"
                } else {
                    "MOVIL"
                },
                rng.below(2),
            );
            s.push('\n');
        }
        s
    }
}

/// Actas of `d` captured at fraction `f`: never decreasing in `f`, never above `d.actas`.
fn captured(d: &Distrito, f: f64) -> u64 {
    if f <= 0.0 {
        return 0;
    }
    ((d.actas as f64 * f + d.phase).floor() as u64).min(d.actas)
}

fn votes(d: &Distrito, f: f64) -> [u64; 9] {
    let cap = captured(d, f);
    let sum: u64 = d.shares.iter().sum();
    let mut v = [0u64; 9];
    for (x, s) in v.iter_mut().zip(d.shares) {
        *x = cap * 330 * s / sum.max(1);
    }
    v
}

fn votos_json(v: &[u64; 9]) -> String {
    let mut s = String::from("{");
    for (i, (p, x)) in PARTIDOS.iter().zip(v).enumerate() {
        let _ = write!(s, "{}\"{p}\":{x}", if i > 0 { "," } else { "" });
    }
    s.push('}');
    s
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn page(path: &str, title: &str, rng: &mut Rng) -> String {
    let up = "../".repeat(path.matches('/').count());
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"es\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>PREP 2024 | {title}</title>\n\
         <link rel=\"icon\" href=\"{up}img/favicon.ico\">\n\
         <link rel=\"stylesheet\" href=\"{up}css/bootstrap.min.css\">\n\
         <link rel=\"stylesheet\" href=\"{up}css/main.css\">\n\
         <link rel=\"stylesheet\" href=\"{up}css/print.css\" media=\"print\">\n\
         <script src=\"{up}js/vendor.min.js\" defer></script>\n\
         <script src=\"{up}js/app.js\" defer></script>\n</head>\n<body>\n\
         <header><img src=\"{up}img/logo.png\" alt=\"PREP\"><nav>\n"
    );
    for (p, t) in PAGES.iter().take(10) {
        let _ = writeln!(s, "<a href=\"{up}{p}\">{t}</a>");
    }
    let _ = write!(
        s,
        "</nav></header>\n<main>\n<h1>{title}</h1>\n\
         <p id=\"corte\">Corte: <span data-json=\"{up}json/main.json\"></span></p>\n"
    );
    for _ in 0..rng.range(4, 12) {
        let n = rng.range(20, 60) as usize;
        let _ = writeln!(s, "<p>{}.</p>", words(rng, n));
    }
    s.push_str("</main>\n<footer>Instituto Nacional Electoral</footer>\n</body>\n</html>\n");
    s
}

fn statics(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // css/
    let mut css = String::new();
    for i in 0..rng.range(300, 400) {
        let _ = writeln!(
            css,
            ".c{i}-{:x}{{margin:{}px {}px;padding:{}rem;color:#{:06x};font-size:{}%}}",
            rng.below(4096),
            rng.below(40),
            rng.below(40),
            rng.below(5),
            rng.below(0xFF_FFFF),
            rng.range(60, 200)
        );
    }
    out.push(("css/bootstrap.min.css".to_string(), css.into_bytes()));
    let mut css = String::from(":root{--guinda:#8a1538;--gris:#545454}\n");
    for sel in [
        "body", "header", "nav a", "main", "footer", "h1", "p", ".tabla", ".mapa",
    ] {
        let _ = writeln!(
            css,
            "{sel} {{ margin: {}px; color: var(--gris); line-height: 1.{}; }}",
            rng.below(30),
            rng.range(2, 8)
        );
    }
    out.push(("css/main.css".to_string(), css.into_bytes()));
    out.push((
        "css/print.css".to_string(),
        b"@media print { nav, footer { display: none } body { color: #000 } }\n".to_vec(),
    ));
    // js/
    out.push((
        "js/app.js".to_string(),
        b"'use strict';\nfetch('json/main.json').then(r => r.json()).then(m => {\n  \
          const el = document.querySelector('#corte span');\n  \
          if (el) el.textContent = m.fechaCorte + ' ' + m.horaCorte + ' (UTC-6)';\n});\n"
            .to_vec(),
    ));
    let mut js = String::from("/*! vendor bundle */\n");
    for i in 0..rng.range(250, 350) {
        let _ = write!(
            js,
            "function f{i}_{:x}(a,b){{return a*{}+b^{};}}",
            rng.next_u64(),
            rng.below(1000),
            rng.below(1 << 20)
        );
    }
    out.push(("js/vendor.min.js".to_string(), js.into_bytes()));
    out.push((
        "js/graficas.js".to_string(),
        format!(
            "export function barras(datos) {{ return datos.map(d => d.votos * {}); }}\n",
            rng.range(1, 9)
        )
        .into_bytes(),
    ));
    // img/: small binary files with real magic numbers and random bodies.
    let png = |rng: &mut Rng, n: usize| {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        v.extend(rng.bytes(n));
        v
    };
    let n = rng.range(1500, 6000) as usize;
    out.push(("img/logo.png".to_string(), png(rng, n)));
    let mut ico = vec![0u8, 0, 1, 0, 1, 0];
    ico.extend(rng.bytes(1100));
    out.push(("img/favicon.ico".to_string(), ico));
    for p in PARTIDOS.iter().take(7) {
        let n = rng.range(600, 3000) as usize;
        out.push((format!("img/partidos/{p}.png"), png(rng, n)));
    }
    let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xE0];
    let n = rng.range(8000, 20_000) as usize;
    jpg.extend(rng.bytes(n));
    out.push(("img/banner.jpg".to_string(), jpg));
    let mut svg =
        String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 1000 700\">\n");
    for (e, nombre) in ENTIDADES.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<path id=\"e{:02}\" data-nombre=\"{nombre}\" d=\"M{} {} l{} {} l{} {} z\"/>",
            e + 1,
            rng.below(1000),
            rng.below(700),
            rng.below(80),
            rng.below(80),
            rng.below(80),
            rng.below(80)
        );
    }
    svg.push_str("</svg>\n");
    out.push(("img/mapa.svg".to_string(), svg.into_bytes()));
    // fonts/
    for (f, magic) in [
        ("fonts/roboto-regular.woff2", b"wOF2"),
        ("fonts/roboto-bold.woff2", b"wOF2"),
        ("fonts/iconos.woff", b"wOFF"),
    ] {
        let mut v = magic.to_vec();
        let n = rng.range(9000, 24_000) as usize;
        v.extend(rng.bytes(n));
        out.push((f.to_string(), v));
    }
    out
}

/// A LEEME.txt as institutes ship it: Latin-1, CRLF.
fn leeme() -> Vec<u8> {
    let text = "LEEME\r\n\r\nBase de datos del Programa de Resultados Electorales Preliminares.\r\n\
                Las columnas están separadas por el carácter |.\r\n\
                SHA: código de integridad (SHA-256) de la imagen del acta.\r\n\
                Los campos sin información muestran SIN DATO, -, ILEGIBLE o N/A.\r\n";
    // Latin-1: every char here is below U+0100.
    text.chars().map(|c| c as u32 as u8).collect()
}

/// The first, full-site package of a night (about 400 files): `index.html` and 22 more pages
/// (some in subdirectories, each with a `<title>` and links to css/js), `css/`, `js/`, `img/`
/// (small binary files), `fonts/`, `json/main.json` (`fechaCorte`, `horaCorte`, `archivoCorte`,
/// `cortePrueba`, `totalActas`, `actasCapturadas`), `json/entidad/NN.json` (32),
/// `json/distrito/NNN.json` (300), `csv/` (three results CSVs and `LEEME.txt`) and
/// `assets/<cut>_PREP.zip` (a nested zip of the CSVs).
pub fn full_site(cut: &CutTime, seed: u64) -> Vec<(String, Vec<u8>)> {
    Site::new(seed).full(cut)
}

/// An increment: `json/**` for the new cut (new `actasCapturadas`, `main.json`) and the new
/// `assets/<cut>_PREP.zip`; same seed as the full site it follows.
pub fn increment(cut: &CutTime, seed: u64) -> Vec<(String, Vec<u8>)> {
    Site::new(seed).increment(cut)
}

/// A realistic ~40 MB package for benchmarks (zip it with [`zip_bytes`]): the full site plus
/// 3,000 section JSONs, 400 photos (incompressible) and a ~20 MB nested database zip of
/// incompressible-ish CSV (random SHA columns); about 3,800 files, ~50 MB extracted.
pub fn big_site(cut: &CutTime, seed: u64) -> Vec<(String, Vec<u8>)> {
    let site = Site::new(seed);
    let mut out: Vec<(String, Vec<u8>)> = site
        .full(cut)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("assets/"))
        .collect();
    let mut rng = Rng::new(seed ^ 0xB16);
    let f = captured_fraction(cut);
    for s in 1..=3000u32 {
        let d = &site.distritos[rng.below(300) as usize];
        let casillas = rng.range(1, 12);
        let mut j = format!(
            "{{\"fechaCorte\":\"{}\",\"horaCorte\":\"{}\",\"seccion\":{s},\"distrito\":\"{}\",\
             \"entidad\":\"{:02}\",\"casillas\":[",
            cut.fecha(),
            cut.hora(),
            d.id,
            d.entidad + 1
        );
        for c in 0..casillas {
            let _ = write!(
                j,
                "{}{{\"id\":\"{s:04}B{c:02}\",\"capturada\":{},\"votos\":{},\"sha\":\"",
                if c > 0 { "," } else { "" },
                (rng.below(1000) as f64) < f * 1000.0,
                votos_json(&votes(d, f * rng.below(100) as f64 / 100.0)),
            );
            rng.hex64(&mut j);
            j.push_str("\"}");
        }
        j.push_str("]}\n");
        out.push((format!("json/seccion/{s:05}.json"), j.into_bytes()));
    }
    for i in 1..=400u32 {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0];
        let n = rng.range(30_000, 50_000) as usize;
        v.extend(rng.bytes(n));
        out.push((format!("img/casillas/{i:04}.jpg"), v));
    }
    // ~62 MB of CSV: 3 elections × 64,000 rows of ~320 bytes, deflating to ~20 MB.
    let mut files = Vec::new();
    for (i, (stem, title)) in ELECTIONS.iter().enumerate() {
        let csv = site.results_csv(cut, title, 64_000, seed ^ ((i as u64 + 1) * 977));
        files.push((format!("{stem}.csv"), csv.into_bytes()));
    }
    files.push(("LEEME.txt".to_string(), leeme()));
    out.push((
        format!("assets/{}", cut.name(".zip")),
        zip_bytes_at(&files, cut),
    ));
    out
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A `sha256sum`-format sidecar (`<hash>  <name>\n`) for a package.
pub fn sidecar_for(file_name: &str, bytes: &[u8]) -> String {
    format!("{}  {file_name}\n", sha256_hex(bytes))
}

// ---------------------------------------------------------------------------------------------
// Zip, written by hand
// ---------------------------------------------------------------------------------------------

/// Unix 3.0, as Info-ZIP writes "version made by".
pub const MADE_BY_UNIX: u16 = (3 << 8) | 30;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;

/// One zip entry, exactly as [`write_zip`] lays it out: every field lands in the local and
/// central headers verbatim, so a hostile case is a field set to a lie.
#[derive(Clone, Debug)]
pub struct ZipEntry {
    /// Name bytes, in both headers (CP437 unless `flags` has bit 11).
    pub name: Vec<u8>,
    /// 0 stored, 8 deflate, anything else as given.
    pub method: u16,
    /// General purpose flags: bit 0 encrypted, bit 3 data descriptor, bit 11 UTF-8 name.
    pub flags: u16,
    pub crc: u32,
    /// The bytes stored after the local header (compressed data).
    pub data: Vec<u8>,
    /// Uncompressed size.
    pub size: u64,
    pub made_by: u16,
    pub version_needed: u16,
    /// Unix mode in the high 16 bits, MS-DOS attributes in the low byte.
    pub external_attr: u32,
    pub time: u16,
    pub date: u16,
    pub local_extra: Vec<u8>,
    pub central_extra: Vec<u8>,
    /// (crc, compressed size, size) written in the local header instead of the true ones.
    pub local_lie: Option<(u32, u32, u32)>,
    /// Write crc/sizes as zero in the local header and a signed data descriptor after the data
    /// (what streaming zippers do); the caller sets flag bit 3.
    pub descriptor: bool,
    /// No local header of its own: the central record points at entry N's local header.
    pub alias_of: Option<usize>,
}

fn ut_ux_extras(mtime: u32) -> (Vec<u8>, Vec<u8>) {
    // Info-ZIP: "UT" extended timestamp (local: mtime+atime, central: mtime) and "ux" uid/gid.
    let mut local = vec![0x55, 0x54, 9, 0, 3];
    local.extend(mtime.to_le_bytes());
    local.extend(mtime.to_le_bytes());
    let mut central = vec![0x55, 0x54, 5, 0, 3];
    central.extend(mtime.to_le_bytes());
    let ux = [0x75, 0x78, 11, 0, 1, 4, 0xE8, 3, 0, 0, 4, 0xE8, 3, 0, 0];
    local.extend(ux);
    central.extend(ux);
    (local, central)
}

impl ZipEntry {
    fn base(name: Vec<u8>, at: &CutTime) -> Self {
        let (time, date) = at.dos();
        let (local_extra, central_extra) = ut_ux_extras(at.unix_time() as u32);
        let flags = if !name.is_ascii() && std::str::from_utf8(&name).is_ok() {
            1 << 11
        } else {
            0
        };
        ZipEntry {
            name,
            method: 0,
            flags,
            crc: 0,
            data: Vec::new(),
            size: 0,
            made_by: MADE_BY_UNIX,
            version_needed: 10,
            external_attr: (S_IFREG | 0o644) << 16,
            time,
            date,
            local_extra,
            central_extra,
            local_lie: None,
            descriptor: false,
            alias_of: None,
        }
    }

    /// A regular file, deflated unless that does not make it smaller (then stored, like
    /// Info-ZIP).
    pub fn file(name: impl Into<Vec<u8>>, content: &[u8], mode: u32, at: &CutTime) -> Self {
        let mut e = ZipEntry::stored(name, content, mode, at);
        if !content.is_empty() {
            let z = deflate(content);
            if z.len() < content.len() {
                e.method = 8;
                e.version_needed = 20;
                e.data = z;
            }
        }
        e
    }

    /// A regular file, stored (method 0): its bytes appear verbatim in the archive.
    pub fn stored(name: impl Into<Vec<u8>>, content: &[u8], mode: u32, at: &CutTime) -> Self {
        let mut e = ZipEntry::base(name.into(), at);
        e.crc = crc32(content);
        e.data = content.to_vec();
        e.size = content.len() as u64;
        e.external_attr = (S_IFREG | (mode & 0o7777)) << 16;
        e
    }

    /// A directory entry (`name` ends with `/`), as `zip -r` writes them.
    pub fn dir(name: impl Into<Vec<u8>>, at: &CutTime) -> Self {
        let mut e = ZipEntry::base(name.into(), at);
        e.external_attr = ((S_IFDIR | 0o755) << 16) | 0x10;
        e
    }

    /// A symlink as `zip -y` stores it: mode 0120777, the target as the (stored) content.
    pub fn symlink(name: impl Into<Vec<u8>>, target: &str, at: &CutTime) -> Self {
        let mut e = ZipEntry::stored(name, target.as_bytes(), 0o777, at);
        e.external_attr = (S_IFLNK | 0o777) << 16;
        e
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Lays out `entries`: local headers and data in order, the central directory, and the end
/// record (with the Zip64 end record and locator when there are more than 65,535 entries).
pub fn write_zip(entries: &[ZipEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets: Vec<u64> = Vec::with_capacity(entries.len());
    for e in entries {
        if let Some(i) = e.alias_of {
            offsets.push(offsets[i]);
            continue;
        }
        offsets.push(out.len() as u64);
        let (crc, csize, size) = if e.descriptor {
            (0, 0, 0)
        } else {
            e.local_lie
                .unwrap_or((e.crc, e.data.len() as u32, e.size as u32))
        };
        put32(&mut out, 0x0403_4b50);
        put16(&mut out, e.version_needed);
        put16(&mut out, e.flags);
        put16(&mut out, e.method);
        put16(&mut out, e.time);
        put16(&mut out, e.date);
        put32(&mut out, crc);
        put32(&mut out, csize);
        put32(&mut out, size);
        put16(&mut out, e.name.len() as u16);
        put16(&mut out, e.local_extra.len() as u16);
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.local_extra);
        out.extend_from_slice(&e.data);
        if e.descriptor {
            put32(&mut out, 0x0807_4b50);
            put32(&mut out, e.crc);
            put32(&mut out, e.data.len() as u32);
            put32(&mut out, e.size as u32);
        }
    }
    let cd_start = out.len() as u64;
    for (e, &off) in entries.iter().zip(&offsets) {
        put32(&mut out, 0x0201_4b50);
        put16(&mut out, e.made_by);
        put16(&mut out, e.version_needed);
        put16(&mut out, e.flags);
        put16(&mut out, e.method);
        put16(&mut out, e.time);
        put16(&mut out, e.date);
        put32(&mut out, e.crc);
        put32(&mut out, e.data.len() as u32);
        put32(&mut out, e.size as u32);
        put16(&mut out, e.name.len() as u16);
        put16(&mut out, e.central_extra.len() as u16);
        put16(&mut out, 0); // comment
        put16(&mut out, 0); // disk
        put16(&mut out, 0); // internal attributes
        put32(&mut out, e.external_attr);
        put32(&mut out, off as u32);
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.central_extra);
    }
    let cd_end = out.len() as u64;
    let n = entries.len() as u64;
    if n > 0xFFFF {
        // Zip64 end of central directory record, then its locator.
        put32(&mut out, 0x0606_4b50);
        put64(&mut out, 44);
        put16(&mut out, MADE_BY_UNIX);
        put16(&mut out, 45);
        put32(&mut out, 0);
        put32(&mut out, 0);
        put64(&mut out, n);
        put64(&mut out, n);
        put64(&mut out, cd_end - cd_start);
        put64(&mut out, cd_start);
        put32(&mut out, 0x0706_4b50);
        put32(&mut out, 0);
        put64(&mut out, cd_end);
        put32(&mut out, 1);
    }
    put32(&mut out, 0x0605_4b50);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, n.min(0xFFFF) as u16);
    put16(&mut out, n.min(0xFFFF) as u16);
    put32(&mut out, (cd_end - cd_start) as u32);
    put32(&mut out, cd_start as u32);
    put16(&mut out, 0);
    out
}

/// Directory entries (`a/`, `a/b/`) before the first file under each, like `zip -r` and `tar`.
fn with_dirs(files: &[(String, Vec<u8>)]) -> Vec<(String, Option<&[u8]>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(files.len() + 32);
    for (path, data) in files {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i + 1;
            let dir = &path[..end];
            if seen.insert(dir.to_string()) {
                out.push((dir.to_string(), None));
            }
        }
        out.push((path.clone(), Some(data.as_slice())));
    }
    out
}

/// A zip as `zip -r` makes it (deflate, directory entries, Unix modes 0644/0755, extra fields),
/// dated 2024-06-02 20:15.
pub fn zip_bytes(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    zip_bytes_at(files, &CutTime::example())
}

/// [`zip_bytes`] with every entry dated `at`.
pub fn zip_bytes_at(files: &[(String, Vec<u8>)], at: &CutTime) -> Vec<u8> {
    let entries: Vec<ZipEntry> = with_dirs(files)
        .into_iter()
        .map(|(p, data)| match data {
            None => ZipEntry::dir(p, at),
            Some(d) => ZipEntry::file(p, d, 0o644, at),
        })
        .collect();
    write_zip(&entries)
}

/// Raw deflate (no zlib header), default level.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("deflate to memory");
    e.finish().expect("deflate to memory")
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

/// `data` deflated from an empty window and sync-flushed: a self-contained piece of a raw
/// deflate stream. It starts byte-aligned, ends byte-aligned (with an empty stored block) and
/// only refers back into itself, so copies of it can be concatenated into one valid stream.
pub fn deflate_segment(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut pos = 0;
    loop {
        out.reserve(64 * 1024);
        let before = c.total_in() as usize;
        c.compress_vec(&data[pos..], &mut out, FlushCompress::Sync)
            .expect("deflate to memory");
        pos += c.total_in() as usize - before;
        // Done once all input is in and the flush did not run out of room.
        if pos == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

/// CRC-32 state of `data` repeated `times`, by doubling with `combine` (no pass over the
/// repeated bytes).
fn crc_repeated(data: &[u8], times: u64) -> crc32fast::Hasher {
    let mut acc = crc32fast::Hasher::new();
    let mut block = crc32fast::Hasher::new();
    block.update(data);
    let mut rest = times;
    while rest > 0 {
        if rest & 1 == 1 {
            acc.combine(&block);
        }
        let b = block.clone();
        block.combine(&b);
        rest >>= 1;
    }
    acc
}

/// A raw deflate stream of `segment` repeated `times` and its CRC-32, in time proportional to
/// the *compressed* size: [`deflate_segment`] once, copies, and a final empty fixed-Huffman
/// block (`03 00`).
pub fn deflate_repeated(segment: &[u8], times: u64) -> (Vec<u8>, u32) {
    let seg = deflate_segment(segment);
    let mut out = Vec::with_capacity(seg.len() * times as usize + 2);
    for _ in 0..times {
        out.extend_from_slice(&seg);
    }
    out.extend_from_slice(&[0x03, 0x00]);
    (out, crc_repeated(segment, times).finalize())
}

/// A raw deflate stream of `n` zero bytes and its CRC-32, built in milliseconds for any `n`:
/// 1 MiB zero segments (a literal 0, then back-references into themselves, ≈ 1 KB each, see
/// [`deflate_segment`]) plus one for the remainder.
pub fn deflate_zeros(n: u64) -> (Vec<u8>, u32) {
    const SEG: u64 = 1 << 20;
    let (mut out, _) = deflate_repeated(&vec![0u8; SEG as usize], n / SEG);
    out.truncate(out.len() - 2);
    if !n.is_multiple_of(SEG) {
        out.extend(deflate_segment(&vec![0u8; (n % SEG) as usize]));
    }
    out.extend_from_slice(&[0x03, 0x00]);
    (out, crc_repeated(&[0], n).finalize())
}

/// A zip entry of `n` zeros, deflated (see [`deflate_zeros`]).
pub fn zip_zeros_entry(name: &str, n: u64, at: &CutTime) -> ZipEntry {
    let (data, crc) = deflate_zeros(n);
    let mut e = ZipEntry::base(name.as_bytes().to_vec(), at);
    e.method = 8;
    e.version_needed = 20;
    e.crc = crc;
    e.data = data;
    e.size = n;
    e
}

// ---------------------------------------------------------------------------------------------
// Tar and gzip, written by hand
// ---------------------------------------------------------------------------------------------

/// One tar member as [`write_tar`] lays it out (GNU format: `ustar  \0` magic, `././@LongLink`
/// members for names or link targets over 100 bytes, optional PAX records before it).
#[derive(Clone, Debug)]
pub struct TarEntry {
    pub name: Vec<u8>,
    /// `0` file, `5` directory, `2` symlink, `1` hard link, `3` char device, `4` block device,
    /// `6` FIFO.
    pub kind: u8,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub dev: (u32, u32),
    pub mtime: u64,
    /// PAX extended header records (`x` member) written before this one.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl TarEntry {
    pub fn new(kind: u8, name: impl Into<Vec<u8>>, mode: u32, at: &CutTime) -> Self {
        TarEntry {
            name: name.into(),
            kind,
            mode,
            data: Vec::new(),
            link: Vec::new(),
            dev: (0, 0),
            mtime: at.unix_time(),
            pax: Vec::new(),
        }
    }
    pub fn file(name: impl Into<Vec<u8>>, data: &[u8], at: &CutTime) -> Self {
        let mut e = TarEntry::new(b'0', name, 0o644, at);
        e.data = data.to_vec();
        e
    }
    pub fn dir(name: impl Into<Vec<u8>>, at: &CutTime) -> Self {
        TarEntry::new(b'5', name, 0o755, at)
    }
    pub fn symlink(name: impl Into<Vec<u8>>, target: &str, at: &CutTime) -> Self {
        let mut e = TarEntry::new(b'2', name, 0o777, at);
        e.link = target.as_bytes().to_vec();
        e
    }
    pub fn hardlink(name: impl Into<Vec<u8>>, target: &str, at: &CutTime) -> Self {
        let mut e = TarEntry::new(b'1', name, 0o644, at);
        e.link = target.as_bytes().to_vec();
        e
    }
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    assert!(s.len() <= digits, "{v} does not fit a tar field");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// One 512-byte header. `name`/`link` are cut to 100 bytes (longer ones need a LongLink first).
#[allow(clippy::too_many_arguments)]
fn tar_header(
    name: &[u8],
    kind: u8,
    mode: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u32, u32),
    magic: &[u8; 8],
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 1000);
    octal(&mut h[116..124], 1000);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(magic);
    h[265..269].copy_from_slice(b"prep");
    h[297..301].copy_from_slice(b"prep");
    if kind == b'3' || kind == b'4' {
        octal(&mut h[329..337], dev.0 as u64);
        octal(&mut h[337..345], dev.1 as u64);
    }
    set_tar_checksum(&mut h);
    h
}

/// Recomputes a header's checksum (after surgery on it).
pub fn set_tar_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

const GNU_MAGIC: &[u8; 8] = b"ustar  \0";
const USTAR_MAGIC: &[u8; 8] = b"ustar\x0000";

fn pad512(out: &mut Vec<u8>) {
    let r = out.len() % 512;
    if r != 0 {
        out.resize(out.len() + 512 - r, 0);
    }
}

fn long_link(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let mut data = value.to_vec();
    data.push(0);
    out.extend_from_slice(&tar_header(
        b"././@LongLink",
        kind,
        0o644,
        data.len() as u64,
        0,
        b"",
        (0, 0),
        GNU_MAGIC,
    ));
    out.extend_from_slice(&data);
    pad512(out);
}

/// Appends one member (with its LongLink / PAX members) to a tar stream.
pub fn append_tar(out: &mut Vec<u8>, e: &TarEntry) {
    let magic = if e.pax.is_empty() {
        GNU_MAGIC
    } else {
        USTAR_MAGIC
    };
    if !e.pax.is_empty() {
        let mut recs = Vec::new();
        for (k, v) in &e.pax {
            let body = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            recs.extend_from_slice(format!("{len} {k}=").as_bytes());
            recs.extend_from_slice(v);
            recs.push(b'\n');
        }
        out.extend_from_slice(&tar_header(
            b"././@PaxHeader",
            b'x',
            0o644,
            recs.len() as u64,
            e.mtime,
            b"",
            (0, 0),
            USTAR_MAGIC,
        ));
        out.extend_from_slice(&recs);
        pad512(out);
    }
    if e.name.len() > 100 {
        long_link(out, b'L', &e.name);
    }
    if e.link.len() > 100 {
        long_link(out, b'K', &e.link);
    }
    out.extend_from_slice(&tar_header(
        &e.name,
        e.kind,
        e.mode,
        e.data.len() as u64,
        e.mtime,
        &e.link,
        e.dev,
        magic,
    ));
    out.extend_from_slice(&e.data);
    pad512(out);
}

/// Ends a tar stream: two zero blocks, then zeros up to a 10 KiB record, as GNU tar does.
pub fn finish_tar(out: &mut Vec<u8>) {
    out.resize(out.len() + 1024, 0);
    let r = out.len() % 10_240;
    if r != 0 {
        out.resize(out.len() + 10_240 - r, 0);
    }
}

pub fn write_tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        append_tar(&mut out, e);
    }
    finish_tar(&mut out);
    out
}

/// gzip with a fixed header (mtime 0), at `level`.
pub fn gzip(data: &[u8], level: Compression) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(data.len() / 3 + 64), level);
    e.write_all(data).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// A tar.gz as `tar czf` makes it: directory members (0755), files (0644), dated 2024-06-02 20:15.
pub fn tar_gz_bytes(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    tar_gz_bytes_at(files, &CutTime::example())
}

/// [`tar_gz_bytes`] with every member dated `at`.
pub fn tar_gz_bytes_at(files: &[(String, Vec<u8>)], at: &CutTime) -> Vec<u8> {
    let entries: Vec<TarEntry> = with_dirs(files)
        .into_iter()
        .map(|(p, data)| match data {
            None => TarEntry::dir(p, at),
            Some(d) => TarEntry::file(p, d, at),
        })
        .collect();
    gzip(&write_tar(&entries), Compression::default())
}

// ---------------------------------------------------------------------------------------------
// The hostile corpus
// ---------------------------------------------------------------------------------------------

/// One package of the corpus.
pub struct Hostile {
    /// Short id, unique in the corpus (`zip-slip-zip`).
    pub name: &'static str,
    /// The name it is uploaded as (`20240602_2015_PREP.zip`); every entry has its own cut.
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// `ExtractError::kind()` it must fail with; `"checksum"` when only the sidecar is wrong;
    /// `"ok"` when it must be accepted (with names decoded and modes normalised).
    pub expect_kind: &'static str,
    /// Content of `<file_name>.sha256`, uploaded before the package.
    pub sidecar: Option<String>,
}

/// Default `Limits::max_entries` the corpus is built against.
pub const DEFAULT_MAX_ENTRIES: u64 = 200_000;
/// Size of the zip bomb's single entry of zeros (≥ 300 MB).
pub const ZIP_BOMB_BYTES: u64 = 320 << 20;
/// 1 MiB segments in each of the two entries of `too-large-zip` (2 × 2,100 MiB > 4 GiB).
pub const TOO_LARGE_SEGMENTS: u64 = 2100;

/// Where the corpus' escaping links and absolute paths point (created by the test, must stay
/// as it was). Relative escapes climb with enough `..` to reach `/` from any temp dir.
pub const ESCAPE_DIR: &str = "/tmp/difusor-corpus-escape";
const CLIMB: &str = "../../../../../../../../../../../../../../../..";

/// A small, valid package: three files under two directories.
pub fn mini_files(cut: &CutTime) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "index.html".to_string(),
            b"<!DOCTYPE html><html lang=\"es\"><head><title>PREP</title></head><body>PREP</body></html>\n".to_vec(),
        ),
        (
            "css/main.css".to_string(),
            b"body { margin: 0; font-family: sans-serif }\n".to_vec(),
        ),
        ("json/main.json".to_string(), Site::new(1).main_json(cut)),
    ]
}

/// Every hostile or tricky package difusor must handle, each labelled with the outcome.
///
/// Kinds: "wrong-format", "truncated", "corrupt", "unsafe-path", "link-escape",
/// "link-not-allowed", "special-file", "duplicate-path", "name-too-long", "too-many-entries",
/// "too-large", "ratio-exceeded", "empty-archive", "overlapping-entries", "encrypted",
/// "unsupported", "checksum", "ok".
pub fn hostile_corpus() -> Vec<Hostile> {
    let mut v: Vec<Hostile> = Vec::new();
    let base = CutTime::new(2024, 6, 2, 20, 0);
    let mut n = 0i64;
    let mut next_cut = || {
        n += 1;
        base.plus_minutes(n)
    };
    macro_rules! add {
        ($name:expr, $ext:expr, $kind:expr, $bytes:expr) => {{
            let cut = next_cut();
            v.push(Hostile {
                name: $name,
                file_name: cut.name($ext),
                bytes: $bytes(&cut),
                expect_kind: $kind,
                sidecar: None,
            });
        }};
    }
    // A tiny valid zip/tgz around extra entries.
    let zip_with = |extra: Vec<ZipEntry>, cut: &CutTime| {
        let mut es = vec![ZipEntry::file(
            "index.html",
            b"<html><title>PREP</title></html>\n",
            0o644,
            cut,
        )];
        es.extend(extra);
        write_zip(&es)
    };
    let tgz_with = |extra: Vec<TarEntry>, cut: &CutTime| {
        let mut es = vec![TarEntry::file(
            "index.html",
            b"<html><title>PREP</title></html>\n",
            cut,
        )];
        es.extend(extra);
        gzip(&write_tar(&es), Compression::default())
    };
    let payload = b"pwned\n";

    // ---- accepted controls --------------------------------------------------------------
    add!("control-zip", ".zip", "ok", |c: &CutTime| zip_bytes_at(
        &mini_files(c),
        c
    ));
    add!("control-tgz", ".tar.gz", "ok", |c: &CutTime| {
        tar_gz_bytes_at(&mini_files(c), c)
    });
    // `tar czf pkg.tar.gz -C site .` writes `./`, `./index.html`…: must land at the top.
    add!("dot-slash-tgz", ".tar.gz", "ok", |c: &CutTime| {
        let es = vec![
            TarEntry::dir("./", c),
            TarEntry::file("./index.html", b"<html></html>\n", c),
            TarEntry::dir("./json/", c),
            TarEntry::file("./json/main.json", &Site::new(1).main_json(c), c),
        ];
        gzip(&write_tar(&es), Compression::default())
    });
    // Streaming zippers: bit 3, zero crc/sizes in the local header, signed data descriptor.
    add!("data-descriptor-zip", ".zip", "ok", |c: &CutTime| {
        let es: Vec<ZipEntry> = mini_files(c)
            .iter()
            .map(|(p, d)| {
                let mut e = ZipEntry::file(p.as_str(), d, 0o644, c);
                e.flags |= 1 << 3;
                e.descriptor = true;
                e
            })
            .collect();
        write_zip(&es)
    });
    // Names > 100 bytes: GNU `././@LongLink` and PAX `path` records (both legitimate).
    add!("long-names-ok-tgz", ".tar.gz", "ok", |c: &CutTime| {
        let mut pax = TarEntry::file("pax-placeholder", b"pax\n", c);
        pax.pax = vec![("path".to_string(), long_ok_name("pax").into_bytes())];
        tgz_with(
            vec![TarEntry::file(long_ok_name("gnu"), b"gnu\n", c), pax],
            c,
        )
    });
    // UTF-8 names with the zip UTF-8 flag (bit 11).
    add!("utf8-names-zip", ".zip", "ok", |c: &CutTime| {
        zip_with(
            vec![
                ZipEntry::file("Año_2024.txt", b"utf8\n", 0o644, c),
                ZipEntry::dir("estadística/", c),
                ZipEntry::file("estadística/Mérida.json", b"{}\n", 0o644, c),
            ],
            c,
        )
    });
    // Non-UTF-8 names: CP437 in zip (no bit 11), Latin-1 in tar. Must be decoded, not refused.
    add!("cp437-names-zip", ".zip", "ok", |c: &CutTime| {
        // CP437: ñ = A4, í = A1, é = 82.
        zip_with(
            vec![
                ZipEntry::file(b"A\xa4o_2024.txt".to_vec(), b"cp437\n", 0o644, c),
                ZipEntry::dir(b"estad\xa1stica/".to_vec(), c),
                ZipEntry::file(b"estad\xa1stica/M\x82rida.json".to_vec(), b"{}\n", 0o644, c),
            ],
            c,
        )
    });
    add!("latin1-names-tgz", ".tar.gz", "ok", |c: &CutTime| {
        // Latin-1: ñ = F1, í = ED, é = E9.
        tgz_with(
            vec![
                TarEntry::file(b"A\xf1o_2024.txt".to_vec(), b"latin1\n", c),
                TarEntry::dir(b"estad\xedstica/".to_vec(), c),
                TarEntry::file(b"estad\xedstica/M\xe9rida.json".to_vec(), b"{}\n", c),
            ],
            c,
        )
    });
    // setuid/setgid/sticky/world-writable modes: accepted, files normalised to 0644.
    add!("setuid-zip", ".zip", "ok", |c: &CutTime| {
        zip_with(
            vec![
                ZipEntry::file("bin/suid", b"#!/bin/sh\n", 0o4755, c),
                ZipEntry::file("bin/sgid", b"#!/bin/sh\n", 0o2755, c),
                ZipEntry::file("bin/world", b"#!/bin/sh\n", 0o777, c),
                ZipEntry::file("bin/all", b"#!/bin/sh\n", 0o7777, c),
            ],
            c,
        )
    });
    add!("setuid-tgz", ".tar.gz", "ok", |c: &CutTime| {
        let mut sticky = TarEntry::dir("tmp/", c);
        sticky.mode = 0o1777;
        let mut files = vec![sticky];
        for (n, m) in [
            ("tmp/suid", 0o4755),
            ("tmp/sgid", 0o2755),
            ("tmp/world", 0o777),
            ("tmp/all", 0o7777),
        ] {
            let mut f = TarEntry::file(n, b"#!/bin/sh\n", c);
            f.mode = m;
            files.push(f);
        }
        tgz_with(files, c)
    });
    // A correct sidecar: the pipeline must accept it.
    {
        let cut = next_cut();
        let file_name = cut.name(".zip");
        let bytes = zip_bytes_at(&mini_files(&cut), &cut);
        v.push(Hostile {
            name: "sidecar-ok",
            sidecar: Some(sidecar_for(&file_name, &bytes)),
            file_name,
            bytes,
            expect_kind: "ok",
        });
    }

    // ---- format ------------------------------------------------------------------------
    add!("garbage-zip", ".zip", "wrong-format", |c: &CutTime| {
        Rng::new(c.unix_time()).bytes(4096)
    });
    add!("garbage-tgz", ".tar.gz", "wrong-format", |c: &CutTime| {
        Rng::new(c.unix_time()).bytes(4096)
    });
    // What a failed download saves: an HTML error page named like a package.
    add!("html-page-zip", ".zip", "wrong-format", |_c: &CutTime| {
        b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n".to_vec()
    });
    add!("targz-named-zip", ".zip", "wrong-format", |c: &CutTime| {
        tar_gz_bytes_at(&mini_files(c), c)
    });
    add!("zip-named-tgz", ".tar.gz", "wrong-format", |c: &CutTime| {
        zip_bytes_at(&mini_files(c), c)
    });
    // A plain (uncompressed) tar named .tar.gz.
    add!(
        "plain-tar-named-tgz",
        ".tar.gz",
        "wrong-format",
        |c: &CutTime| {
            let es: Vec<TarEntry> = mini_files(c)
                .iter()
                .map(|(p, d)| TarEntry::file(p.as_str(), d, c))
                .collect();
            write_tar(&es)
        }
    );

    // ---- damage ------------------------------------------------------------------------
    // An interrupted upload: the first 60 % of a good zip (no central directory).
    add!("truncated-zip", ".zip", "truncated", |c: &CutTime| {
        let b = zip_bytes_at(&Site::new(2).increment(c), c);
        b[..b.len() * 6 / 10].to_vec()
    });
    // Central directory present but the end record cut in half.
    add!("truncated-eocd-zip", ".zip", "truncated", |c: &CutTime| {
        let b = zip_bytes_at(&mini_files(c), c);
        b[..b.len() - 11].to_vec()
    });
    add!("truncated-tgz", ".tar.gz", "truncated", |c: &CutTime| {
        let b = tar_gz_bytes_at(&Site::new(2).increment(c), c);
        b[..b.len() * 6 / 10].to_vec()
    });
    // A complete gzip stream whose tar stops in the middle of a file's data.
    add!(
        "truncated-tar-in-gzip",
        ".tar.gz",
        "truncated",
        |c: &CutTime| {
            let t = write_tar(&[TarEntry::file("big.csv", &Rng::new(3).bytes(20_000), c)]);
            gzip(&t[..512 + 8_000], Compression::default())
        }
    );
    // Surgery: a stored entry's first data byte flipped; the CRC no longer matches.
    add!("bad-crc-zip", ".zip", "corrupt", |c: &CutTime| {
        let e = ZipEntry::stored("json/main.json", &Site::new(1).main_json(c), 0o644, c);
        let data_at = 30 + e.name.len() + e.local_extra.len();
        let mut b = write_zip(&[e]);
        b[data_at] ^= 0x20;
        b
    });
    // Surgery on a stored-block gzip: one byte of a file's contents flipped, so the tar still
    // parses and only the gzip CRC-32 in the trailer can tell.
    add!("bad-crc-tgz", ".tar.gz", "corrupt", |c: &CutTime| {
        let t = write_tar(&[TarEntry::file(
            "json/main.json",
            &Site::new(1).main_json(c),
            c,
        )]);
        let mut g = gzip(&t, Compression::none());
        // gzip header is 10 bytes, a stored block header 5: tar data starts at 15 + 512.
        g[15 + 512 + 3] ^= 0x01;
        g
    });
    // Surgery: the trailer's CRC-32 (last 8 bytes: CRC, ISIZE) inverted.
    add!("bad-gzip-trailer", ".tar.gz", "corrupt", |c: &CutTime| {
        let mut g = tar_gz_bytes_at(&mini_files(c), c);
        let at = g.len() - 8;
        g[at] ^= 0xFF;
        g
    });
    // Surgery: ISIZE (uncompressed length mod 2^32) off by one.
    add!("bad-gzip-isize", ".tar.gz", "corrupt", |c: &CutTime| {
        let mut g = tar_gz_bytes_at(&mini_files(c), c);
        let at = g.len() - 4;
        g[at] = g[at].wrapping_add(1);
        g
    });
    // Surgery: a tar header's checksum field no longer matches its bytes.
    add!(
        "bad-tar-checksum-tgz",
        ".tar.gz",
        "corrupt",
        |c: &CutTime| {
            let mut t = write_tar(&[TarEntry::file("index.html", b"<html></html>\n", c)]);
            t[148] = if t[148] == b'1' { b'2' } else { b'1' };
            gzip(&t, Compression::default())
        }
    );
    // Local header says 10 bytes (and another CRC), the central directory the truth.
    add!("lying-sizes-zip", ".zip", "corrupt", |c: &CutTime| {
        let mut e = ZipEntry::stored("json/main.json", &Site::new(1).main_json(c), 0o644, c);
        e.local_lie = Some((e.crc ^ 1, 10, 10));
        write_zip(&[e])
    });
    // Two central records (different names) pointing at the same local header and data.
    add!(
        "overlapping-zip",
        ".zip",
        "overlapping-entries",
        |c: &CutTime| {
            let a = ZipEntry::file("json/a.json", &Site::new(1).main_json(c), 0o644, c);
            let mut b = a.clone();
            b.name = b"json/b.json".to_vec();
            b.alias_of = Some(0);
            write_zip(&[a, b])
        }
    );
    add!("empty-zip", ".zip", "empty-archive", |_c: &CutTime| {
        write_zip(&[])
    });
    // What `tar czf x.tar.gz -T /dev/null` writes: one 10 KiB record of zeros.
    add!(
        "empty-tgz",
        ".tar.gz",
        "empty-archive",
        |_c: &CutTime| gzip(&write_tar(&[]), Compression::default())
    );
    // General purpose flag bit 0, with a 12-byte ZipCrypto header before the data.
    add!("encrypted-zip", ".zip", "encrypted", |c: &CutTime| {
        let mut e = ZipEntry::stored("json/main.json", b"{}\n", 0o644, c);
        let mut data = Rng::new(9).bytes(12);
        data.extend(b"\x13\x37\x42");
        e.data = data;
        e.flags |= 1;
        zip_with(vec![e], c)
    });
    // Method 14 (LZMA) in both headers.
    add!("lzma-method-zip", ".zip", "unsupported", |c: &CutTime| {
        let mut e = ZipEntry::stored("json/main.json", &Site::new(1).main_json(c), 0o644, c);
        e.method = 14;
        e.version_needed = 63;
        zip_with(vec![e], c)
    });

    // ---- paths -------------------------------------------------------------------------
    for (name, ext, path) in [
        ("zip-slip-zip", ".zip", "../../x"),
        ("zip-slip-tgz", ".tar.gz", "../../x"),
        ("zip-slip-inner-zip", ".zip", "json/../../x"),
        (
            "absolute-zip",
            ".zip",
            "/tmp/difusor-corpus-escape/absolute-zip",
        ),
        (
            "absolute-tgz",
            ".tar.gz",
            "/tmp/difusor-corpus-escape/absolute-tgz",
        ),
        ("drive-letter-zip", ".zip", "C:/x"),
        ("drive-letter-tgz", ".tar.gz", "C:/x"),
        ("backslash-zip", ".zip", "..\\..\\x"),
        ("backslash-tgz", ".tar.gz", "..\\..\\x"),
    ] {
        if ext == ".zip" {
            add!(name, ext, "unsafe-path", |c: &CutTime| zip_with(
                vec![ZipEntry::file(path, payload, 0o644, c)],
                c
            ));
        } else {
            add!(name, ext, "unsafe-path", |c: &CutTime| tgz_with(
                vec![TarEntry::file(path, payload, c)],
                c
            ));
        }
    }
    // A PAX `path` record overrides the harmless ustar name: the PAX one is what counts.
    add!(
        "pax-path-slip-tgz",
        ".tar.gz",
        "unsafe-path",
        |c: &CutTime| {
            let mut e = TarEntry::file("harmless.txt", payload, c);
            e.pax = vec![("path".to_string(), b"../../pax-x".to_vec())];
            tgz_with(vec![e], c)
        }
    );
    // A GNU LongLink name climbing out (the 100-byte header name looks harmless).
    add!(
        "longlink-slip-tgz",
        ".tar.gz",
        "unsafe-path",
        |c: &CutTime| {
            let name = format!("{}/../../../../x", "d".repeat(100));
            tgz_with(vec![TarEntry::file(name, payload, c)], c)
        }
    );
    // One component of 256 bytes (NAME_MAX is 255).
    add!(
        "long-component-zip",
        ".zip",
        "name-too-long",
        |c: &CutTime| {
            zip_with(
                vec![ZipEntry::file(
                    format!("json/{}", "a".repeat(256)),
                    b"{}\n",
                    0o644,
                    c,
                )],
                c,
            )
        }
    );
    add!(
        "long-component-tgz",
        ".tar.gz",
        "name-too-long",
        |c: &CutTime| {
            tgz_with(
                vec![TarEntry::file(
                    format!("json/{}", "a".repeat(256)),
                    b"{}\n",
                    c,
                )],
                c,
            )
        }
    );
    // 20 components of 250 bytes: 5,020 bytes in all (PATH_MAX is 4,096).
    add!("long-path-zip", ".zip", "name-too-long", |c: &CutTime| {
        zip_with(vec![ZipEntry::file(long_path(), b"{}\n", 0o644, c)], c)
    });
    add!(
        "long-path-tgz",
        ".tar.gz",
        "name-too-long",
        |c: &CutTime| { tgz_with(vec![TarEntry::file(long_path(), b"{}\n", c)], c) }
    );
    add!("duplicate-zip", ".zip", "duplicate-path", |c: &CutTime| {
        zip_with(vec![ZipEntry::file("index.html", payload, 0o644, c)], c)
    });
    add!(
        "duplicate-tgz",
        ".tar.gz",
        "duplicate-path",
        |c: &CutTime| { tgz_with(vec![TarEntry::file("index.html", payload, c)], c) }
    );
    // The same file spelled `./index.html` and `index.html`.
    add!(
        "duplicate-dotslash-tgz",
        ".tar.gz",
        "duplicate-path",
        |c: &CutTime| { tgz_with(vec![TarEntry::file("./index.html", payload, c)], c) }
    );

    // ---- links and special files --------------------------------------------------------
    // A symlink climbing to ESCAPE_DIR, then a file written "through" it.
    add!(
        "symlink-escape-tgz",
        ".tar.gz",
        "link-escape",
        |c: &CutTime| {
            tgz_with(
                vec![
                    TarEntry::symlink("evil", &format!("{CLIMB}{ESCAPE_DIR}"), c),
                    TarEntry::file("evil/symlink-escape-tgz", payload, c),
                ],
                c,
            )
        }
    );
    add!(
        "symlink-absolute-tgz",
        ".tar.gz",
        "link-escape",
        |c: &CutTime| {
            tgz_with(
                vec![
                    TarEntry::symlink("evil", ESCAPE_DIR, c),
                    TarEntry::file("evil/symlink-absolute-tgz", payload, c),
                ],
                c,
            )
        }
    );
    // `zip -y`: external attributes 0120777 << 16, the target as content.
    add!(
        "symlink-escape-zip",
        ".zip",
        "link-escape",
        |c: &CutTime| {
            zip_with(
                vec![ZipEntry::symlink(
                    "evil",
                    &format!("{CLIMB}{ESCAPE_DIR}"),
                    c,
                )],
                c,
            )
        }
    );
    add!(
        "symlink-absolute-zip",
        ".zip",
        "link-escape",
        |c: &CutTime| zip_with(vec![ZipEntry::symlink("evil", ESCAPE_DIR, c)], c)
    );
    // The escaping link plus a file written "through" it. Unlike tar (a stream, where the link
    // and its target come first), a zip's central directory already shows a file below a link
    // before any data (the link target) is read: refused as a tree conflict.
    add!(
        "symlink-write-through-zip",
        ".zip",
        "duplicate-path",
        |c: &CutTime| {
            zip_with(
                vec![
                    ZipEntry::symlink("evil", &format!("{CLIMB}{ESCAPE_DIR}"), c),
                    ZipEntry::file("evil/symlink-escape-zip", payload, 0o644, c),
                ],
                c,
            )
        }
    );
    // A link that stays inside the cut: still refused when links are not allowed.
    add!(
        "symlink-inside-tgz",
        ".tar.gz",
        "link-not-allowed",
        |c: &CutTime| { tgz_with(vec![TarEntry::symlink("inicio.html", "index.html", c)], c) }
    );
    add!(
        "symlink-inside-zip",
        ".zip",
        "link-not-allowed",
        |c: &CutTime| { zip_with(vec![ZipEntry::symlink("inicio.html", "index.html", c)], c) }
    );
    // A hard link to a file outside (the test creates ESCAPE_DIR/hardlink-target).
    add!(
        "hardlink-escape-tgz",
        ".tar.gz",
        "link-escape",
        |c: &CutTime| {
            tgz_with(
                vec![TarEntry::hardlink(
                    "pw",
                    &format!("{CLIMB}{ESCAPE_DIR}/hardlink-target"),
                    c,
                )],
                c,
            )
        }
    );
    add!(
        "hardlink-absolute-tgz",
        ".tar.gz",
        "link-escape",
        |c: &CutTime| {
            tgz_with(
                vec![TarEntry::hardlink(
                    "pw",
                    &format!("{ESCAPE_DIR}/hardlink-target"),
                    c,
                )],
                c,
            )
        }
    );
    add!(
        "hardlink-inside-tgz",
        ".tar.gz",
        "link-not-allowed",
        |c: &CutTime| { tgz_with(vec![TarEntry::hardlink("inicio.html", "index.html", c)], c) }
    );
    // Devices: 1,3 is /dev/null's number, 7,200 an unused loop device (harmless if created).
    add!("chardev-tgz", ".tar.gz", "special-file", |c: &CutTime| {
        let mut e = TarEntry::new(b'3', "null", 0o666, c);
        e.dev = (1, 3);
        tgz_with(vec![e], c)
    });
    add!("blockdev-tgz", ".tar.gz", "special-file", |c: &CutTime| {
        let mut e = TarEntry::new(b'4', "disk", 0o660, c);
        e.dev = (7, 200);
        tgz_with(vec![e], c)
    });
    add!("fifo-tgz", ".tar.gz", "special-file", |c: &CutTime| {
        tgz_with(vec![TarEntry::new(b'6', "pipe", 0o644, c)], c)
    });
    // FIFO / char device modes in a zip's external attributes.
    add!("fifo-zip", ".zip", "special-file", |c: &CutTime| {
        let mut e = ZipEntry::stored("pipe", b"", 0o644, c);
        e.external_attr = (S_IFIFO | 0o644) << 16;
        zip_with(vec![e], c)
    });
    add!("chardev-zip", ".zip", "special-file", |c: &CutTime| {
        let mut e = ZipEntry::stored("null", b"", 0o666, c);
        e.external_attr = (S_IFCHR | 0o666) << 16;
        zip_with(vec![e], c)
    });

    // ---- limits ------------------------------------------------------------------------
    // One entry of 320 MiB of zeros (≈ 330 KB deflated, ≈ 1000:1), sizes declared truthfully.
    // Under the default limits (4 GiB total, 200:1) it is the ratio that refuses it.
    add!("zip-bomb", ".zip", "ratio-exceeded", |c: &CutTime| {
        zip_with(
            vec![zip_zeros_entry("json/bomb.json", ZIP_BOMB_BYTES, c)],
            c,
        )
    });
    // Honestly over 4 GiB (the default `max_total_bytes`) at an innocent ≈ 150:1: two entries
    // of 2,100 MiB, each 1 MiB segment 6,000 random bytes then zeros (≈ 7 KB deflated), so
    // ~29 MB in all. Only the total is wrong; an extractor must refuse it from the declared
    // sizes before inflating anything (or, streaming, at 4 GiB).
    add!("too-large-zip", ".zip", "too-large", |c: &CutTime| {
        let mut seg = Rng::new(77).bytes(6000);
        seg.resize(1 << 20, 0);
        let (data, crc) = deflate_repeated(&seg, TOO_LARGE_SEGMENTS);
        let es = (0..2)
            .map(|i| {
                let mut e = ZipEntry::base(format!("csv/big{i}.csv").into_bytes(), c);
                e.method = 8;
                e.version_needed = 20;
                e.crc = crc;
                e.data = data.clone();
                e.size = TOO_LARGE_SEGMENTS << 20;
                e
            })
            .collect();
        zip_with(es, c)
    });
    // The same stream, but both headers claim 1 KiB: the extractor must count what it
    // inflates, not trust the header.
    add!("zip-bomb-lying-size", ".zip", "corrupt", |c: &CutTime| {
        let mut e = zip_zeros_entry("json/bomb.json", ZIP_BOMB_BYTES, c);
        e.size = 1024;
        zip_with(vec![e], c)
    });
    // Six 8 MiB entries of zeros (48 MiB, under any size limit) at ≈ 1000:1.
    add!("ratio-bomb-zip", ".zip", "ratio-exceeded", |c: &CutTime| {
        let es = (0..6)
            .map(|i| zip_zeros_entry(&format!("json/r{i}.json"), 8 << 20, c))
            .collect();
        zip_with(es, c)
    });
    add!(
        "ratio-bomb-tgz",
        ".tar.gz",
        "ratio-exceeded",
        |c: &CutTime| {
            let zeros = vec![0u8; 8 << 20];
            let mut es = vec![TarEntry::file("index.html", b"<html></html>\n", c)];
            es.extend((0..6).map(|i| TarEntry::file(format!("json/r{i}.json"), &zeros, c)));
            // Level 1 is plenty for zeros and keeps this fast.
            gzip(&write_tar(&es), Compression::fast())
        }
    );
    // 200,001 empty files (Zip64 end record: the 16-bit count cannot hold them).
    add!(
        "too-many-entries-zip",
        ".zip",
        "too-many-entries",
        |c: &CutTime| { many_entries_zip(DEFAULT_MAX_ENTRIES + 1, c) }
    );
    add!(
        "too-many-entries-tgz",
        ".tar.gz",
        "too-many-entries",
        |c: &CutTime| { many_entries_tgz(DEFAULT_MAX_ENTRIES + 1, c) }
    );

    // ---- sidecars (pipeline only: the packages themselves are fine) ----------------------
    {
        let cut = next_cut();
        let file_name = cut.name(".zip");
        let bytes = zip_bytes_at(&mini_files(&cut), &cut);
        let mut wrong = sha256_hex(&bytes).into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        v.push(Hostile {
            name: "bad-sidecar",
            sidecar: Some(format!(
                "{}  {file_name}\n",
                String::from_utf8(wrong).unwrap()
            )),
            file_name,
            bytes,
            expect_kind: "checksum",
        });
    }
    {
        let cut = next_cut();
        let file_name = cut.name(".tar.gz");
        let bytes = tar_gz_bytes_at(&mini_files(&cut), &cut);
        v.push(Hostile {
            name: "malformed-sidecar",
            sidecar: Some(format!("not a hash  {file_name}\n")),
            file_name,
            bytes,
            expect_kind: "checksum",
        });
    }
    v
}

/// `<tag>/` + a 150-byte file name: legitimate, but over tar's 100-byte name field.
pub fn long_ok_name(tag: &str) -> String {
    format!("largo/{tag}-{}.json", "n".repeat(150))
}

fn long_path() -> String {
    (0..20)
        .map(|i| format!("{i:02}{}", "p".repeat(248)))
        .collect::<Vec<_>>()
        .join("/")
}

/// Unique, non-repeating 8-hex names (`i * odd` is a bijection mod 2^32), so neither the zip
/// nor the tar.gz compresses suspiciously well.
fn many_name(i: u64) -> [u8; 10] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let x = (i as u32).wrapping_mul(0x9E37_79B1);
    let mut n = *b"f/00000000";
    for k in 0..8 {
        n[2 + k] = HEX[((x >> (28 - 4 * k)) & 15) as usize];
    }
    n
}

/// `count` empty stored files in one directory, written straight into the buffer.
pub fn many_entries_zip(count: u64, at: &CutTime) -> Vec<u8> {
    let (time, date) = at.dos();
    let mut out = Vec::with_capacity(count as usize * 90);
    // The directory entry `f/` through the normal writer (local header, central record, end
    // record), then the files by hand: two fixed-size headers each, fast even in debug builds.
    let dir = ZipEntry::dir("f/", at);
    let dir_local_len = 30 + dir.name.len() + dir.local_extra.len();
    let head = write_zip(&[dir]);
    out.extend_from_slice(&head[..dir_local_len]);
    let mut offsets = Vec::with_capacity(count as usize);
    for i in 0..count {
        offsets.push(out.len() as u32);
        let mut h = [0u8; 30];
        h[0..4].copy_from_slice(&0x0403_4b50u32.to_le_bytes());
        h[4..6].copy_from_slice(&10u16.to_le_bytes());
        h[10..12].copy_from_slice(&time.to_le_bytes());
        h[12..14].copy_from_slice(&date.to_le_bytes());
        // crc, sizes: 0 (empty file)
        h[26..28].copy_from_slice(&10u16.to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&many_name(i));
    }
    let cd_start = out.len() as u64;
    // Central record of the directory, copied from the normal writer's output.
    let dir_cd = &head[dir_local_len..head.len() - 22];
    out.extend_from_slice(dir_cd);
    for (i, off) in offsets.iter().enumerate() {
        let mut h = [0u8; 46];
        h[0..4].copy_from_slice(&0x0201_4b50u32.to_le_bytes());
        h[4..6].copy_from_slice(&MADE_BY_UNIX.to_le_bytes());
        h[6..8].copy_from_slice(&10u16.to_le_bytes());
        h[12..14].copy_from_slice(&time.to_le_bytes());
        h[14..16].copy_from_slice(&date.to_le_bytes());
        h[28..30].copy_from_slice(&10u16.to_le_bytes());
        h[38..42].copy_from_slice(&((S_IFREG | 0o644) << 16).to_le_bytes());
        h[42..46].copy_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&many_name(i as u64));
    }
    let cd_end = out.len() as u64;
    let n = count + 1;
    put32(&mut out, 0x0606_4b50);
    put64(&mut out, 44);
    put16(&mut out, MADE_BY_UNIX);
    put16(&mut out, 45);
    put32(&mut out, 0);
    put32(&mut out, 0);
    put64(&mut out, n);
    put64(&mut out, n);
    put64(&mut out, cd_end - cd_start);
    put64(&mut out, cd_start);
    put32(&mut out, 0x0706_4b50);
    put32(&mut out, 0);
    put64(&mut out, cd_end);
    put32(&mut out, 1);
    put32(&mut out, 0x0605_4b50);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, 0xFFFF);
    put16(&mut out, 0xFFFF);
    put32(&mut out, (cd_end - cd_start) as u32);
    put32(&mut out, cd_start as u32);
    put16(&mut out, 0);
    out
}

/// `count` empty files in a tar.gz; one header template, name and checksum patched per member,
/// streamed into the gzip encoder (the tar would be ~100 MB).
pub fn many_entries_tgz(count: u64, at: &CutTime) -> Vec<u8> {
    let template = tar_header(
        b"f/00000000",
        b'0',
        0o644,
        0,
        at.unix_time(),
        b"",
        (0, 0),
        GNU_MAGIC,
    );
    // The checksum counts its own field as spaces; take the name out, add each new one back.
    let field: u32 = template[148..156].iter().map(|&b| b as u32).sum();
    let name: u32 = template[..10].iter().map(|&b| b as u32).sum();
    let all: u32 = template.iter().map(|&b| b as u32).sum();
    let base_sum = all - field + 8 * b' ' as u32 - name;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::fast());
    let mut block = Vec::with_capacity(512 * 1024 + 10_240);
    append_tar(&mut block, &TarEntry::dir("f/", at));
    let mut written = 0u64;
    for i in 0..count {
        let name = many_name(i);
        let mut h = template;
        h[..10].copy_from_slice(&name);
        let sum = base_sum + name.iter().map(|&b| b as u32).sum::<u32>();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block.extend_from_slice(&h);
        if block.len() >= 512 * 1024 {
            enc.write_all(&block).expect("gzip to memory");
            written += block.len() as u64;
            block.clear();
        }
    }
    // End of archive: two zero blocks, then up to a 10 KiB record boundary.
    block.resize(block.len() + 1024, 0);
    let r = ((written + block.len() as u64) % 10_240) as usize;
    if r != 0 {
        block.resize(block.len() + 10_240 - r, 0);
    }
    enc.write_all(&block).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}
