//! What a package's name says: whether it is a package, its extension, and its cut time.
//!
//! Owns: the naming rules of `../shared/fixtures/README.md` — `YYYYMMDD_HHMM_PREP[…].zip`
//! (or `.tar.gz`/`.tgz`), the cut time being the institute's local time — and the cut id
//! `YYYYMMDDTHHMMZ-<first 8 hex of sha256>`, which sorts by time.
//! Must never: look inside the file (that is `extract::detect_format`).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The archived copy's extension for a package name, or None if the name is not a package.
pub fn package_extension(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".zip") {
        Some("zip")
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Some("tar.gz")
    } else {
        None
    }
}

pub fn is_package_name(name: &str) -> bool {
    package_extension(name).is_some()
}

/// The cut time in a name such as `20240602_2015_PREP.zip` or `20190603_0547_PREP_DIP_QROO.zip`,
/// interpreted at `offset` (the institute's local time).
pub fn cut_time_from_name(name: &str, offset: UtcOffset) -> Option<OffsetDateTime> {
    let b = name.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = name.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if b.get(8) != Some(&b'_') || b.get(13) != Some(&b'_') {
        return None;
    }
    if !name.get(14..)?.to_ascii_uppercase().starts_with("PREP") {
        return None;
    }
    let y = digits(0..4)? as i32;
    let mo = Month::try_from(digits(4..6)? as u8).ok()?;
    let d = digits(6..8)? as u8;
    let h = digits(9..11)? as u8;
    let mi = digits(11..13)? as u8;
    let date = Date::from_calendar_date(y, mo, d).ok()?;
    let t = Time::from_hms(h, mi, 0).ok()?;
    Some(PrimitiveDateTime::new(date, t).assume_offset(offset))
}

/// `YYYYMMDDTHHMMZ-<8 hex>` from the cut time (or the receive time) and the package hash.
pub fn cut_id(when: OffsetDateTime, sha256_hex: &str) -> String {
    let utc = when.to_offset(UtcOffset::UTC);
    let stamp = utc
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute]Z"
        ))
        .unwrap_or_else(|_| "00000000T0000Z".to_owned());
    format!("{stamp}-{}", sha256_hex.get(..8).unwrap_or(sha256_hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_by_extension() {
        assert_eq!(package_extension("a.zip"), Some("zip"));
        assert_eq!(package_extension("A.ZIP"), Some("zip"));
        assert_eq!(package_extension("a.tar.gz"), Some("tar.gz"));
        assert_eq!(package_extension("a.tgz"), Some("tar.gz"));
        assert_eq!(package_extension("a.zip.sha256"), None);
        assert_eq!(package_extension("notes.txt"), None);
    }

    #[test]
    fn cut_time_is_parsed_in_the_institutes_offset() {
        let off = UtcOffset::from_hms(-6, 0, 0).unwrap();
        let t = cut_time_from_name("20240602_2015_PREP.zip", off).unwrap();
        assert_eq!(t.offset(), off);
        assert_eq!(
            (t.year(), t.month() as u8, t.day(), t.hour(), t.minute()),
            (2024, 6, 2, 20, 15)
        );
        let q = cut_time_from_name("20190603_0547_PREP_DIP_QROO.zip", off).unwrap();
        assert_eq!(q.hour(), 5);
        assert!(cut_time_from_name("20240602_2015_OTHER.zip", off).is_none());
        assert!(cut_time_from_name("20241302_2015_PREP.zip", off).is_none());
        assert!(cut_time_from_name("2024060_2015_PREP.zip", off).is_none());
        assert!(cut_time_from_name("site.zip", off).is_none());
    }

    #[test]
    fn cut_ids_are_utc_and_sort_by_time() {
        let off = UtcOffset::from_hms(-6, 0, 0).unwrap();
        let a = cut_time_from_name("20240602_2015_PREP.zip", off).unwrap();
        let b = cut_time_from_name("20240602_2030_PREP.zip", off).unwrap();
        let ia = cut_id(a, "0123456789abcdef");
        let ib = cut_id(b, "fedcba9876543210");
        assert_eq!(ia, "20240603T0215Z-01234567");
        assert!(ia < ib);
    }
}
