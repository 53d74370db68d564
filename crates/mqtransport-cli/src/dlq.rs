//! `mqt dlq`: a dead-letter queue's messages listed, shown, replayed and purged, on the
//! library's [`DeadLetters`](mqtransport::DeadLetters); and the times its filters take.

use std::time::{Duration, SystemTime};

use anyhow::bail;
use mqtransport::{DeadLetter, ReplayAction, ReplayEntry};
use serde_json::{Value, json};

/// A time for a filter: `2026-12-05T10:00:00Z` (UTC), seconds since the Unix epoch, or a
/// time ago (`90s`, `15m`, `2h`, `3d`).
pub fn parse_time(text: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    let text = text.trim();
    if let Some(ago) = parse_ago(text) {
        return now
            .checked_sub(ago)
            .ok_or_else(|| anyhow::anyhow!("time '{text}' is before the Unix epoch"));
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
    parse_utc(text).ok_or_else(|| {
        anyhow::anyhow!("time '{text}' is not YYYY-MM-DDTHH:MM:SSZ, seconds since the epoch, or an age like 15m")
    })
}

fn parse_ago(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (or with a space for the `T`).
fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':').map(str::parse::<i64>);
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let secs = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days from 1970-01-01 to the date (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `time` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // The inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A dead letter as JSON.
pub fn letter_json(letter: &DeadLetter) -> Value {
    json!({
        "message_id": letter.message_id,
        "name": letter.name,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at.map(utc),
        "queue": letter.queue,
        "original_exchange": letter.original_exchange,
        "original_routing_key": letter.original_routing_key,
        "replays": letter.replays,
        "message": crate::render::envelope_json(&letter.envelope),
    })
}

/// A dead letter as a row: id, name, attempts, failed at, reason.
pub fn letter_row(letter: &DeadLetter) -> Vec<String> {
    vec![
        letter.message_id.clone().unwrap_or_else(|| "(none)".to_owned()),
        letter.name.clone().unwrap_or_default(),
        letter.attempts.map(|n| n.to_string()).unwrap_or_default(),
        letter.failed_at.map(utc).unwrap_or_default(),
        letter.reason.clone(),
    ]
}

/// A replay's entry as JSON.
pub fn entry_json(entry: &ReplayEntry) -> Value {
    let (action, detail) = match &entry.action {
        ReplayAction::Replayed => ("replayed", None),
        ReplayAction::WouldReplay => ("would_replay", None),
        ReplayAction::LoopGuard { replays } => ("loop_guard", Some(format!("replayed {replays} time(s) already"))),
        ReplayAction::Failed { error } => ("failed", Some(error.clone())),
        _ => ("other", Some(entry.to_string())),
    };
    json!({
        "message_id": entry.message_id,
        "name": entry.name,
        "destination": entry.destination,
        "action": action,
        "detail": detail,
    })
}

/// `EXCHANGE:ROUTING_KEY` as a pair.
pub fn parse_route(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once(':') {
        Some((e, k)) if !e.is_empty() => Ok((e.to_owned(), k.to_owned())),
        _ => bail!("route '{text}' is not EXCHANGE:ROUTING_KEY"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_epoch_seconds_or_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("15m", now).unwrap(), now - Duration::from_secs(900));
        assert_eq!(
            parse_time("1700000000", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let t = parse_time("2026-12-05T10:30:00Z", now).unwrap();
        assert_eq!(utc(t), "2026-12-05T10:30:00Z");
        assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc(parse_time("2024-02-29 23:59:59", now).unwrap()),
            "2024-02-29T23:59:59Z"
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2026-13-01T00:00:00Z", now).is_err());
    }

    #[test]
    fn routes_are_exchange_colon_key() {
        assert_eq!(
            parse_route("shop:order.created").unwrap(),
            ("shop".into(), "order.created".into())
        );
        assert!(parse_route("nocolon").is_err());
        assert!(parse_route(":k").is_err());
    }
}
