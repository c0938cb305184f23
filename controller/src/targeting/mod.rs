//! Which agents a fault goes to: label selectors, and (in `partition`) which agent is cut
//! from which. Used by the controller and by scenario checks alike, with its own error.

pub mod partition;

/// A targeting input that makes no sense: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TargetingError {
    pub field: &'static str,
    pub reason: String,
}

/// Whether labels (looked up by `label`) carry every key=value of a parsed selector.
pub fn selector_matches<'a>(
    selector: &[(String, String)],
    label: impl Fn(&str) -> Option<&'a String>,
) -> bool {
    selector.iter().all(|(k, v)| label(k) == Some(v))
}

/// `role=db,zone=a` -> [(role, db), (zone, a)].
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, TargetingError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| TargetingError {
                    field: "target.selector",
                    reason: format!("{} is not key=value", faultline_proto::quote(p)),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_selector("role=db, zone=a").unwrap(),
            vec![("role".into(), "db".into()), ("zone".into(), "a".into())]
        );
        assert!(parse_selector("").unwrap().is_empty());
        let e = parse_selector("role").unwrap_err();
        assert!(e.to_string().starts_with("target.selector"));
    }
}
