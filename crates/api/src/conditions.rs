//! Parsing of `If-Match` and `If-None-Match` into a [`Precondition`].
//!
//! Rules, in the order they apply:
//! - all lines of one header name form one comma-separated list; a value that is empty after
//!   trimming sets no condition;
//! - on a write, `If-None-Match` may only be a bare `*`;
//! - `If-Match` and `If-None-Match` together, both non-empty, are rejected;
//! - `If-Match` is a bare `*` or a list of entity-tags, quoted or bare; commas inside quotes do
//!   not split; `W/"..."` parses but never matches; an unterminated quote or a `*` inside a
//!   list is rejected.

use akstore_store::{EntityTag, Precondition};
use axum::http::HeaderMap;
use axum::http::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};

use crate::error::ApiError;

/// What a GET's conditions ask for.
#[derive(Debug, Default)]
pub struct ReadConditions {
    /// `If-Match`: answer 412 unless one tag matches (or `*`, which any resource matches).
    pub if_match: Option<Vec<EntityTag>>,
    pub if_match_any: bool,
    /// `If-None-Match`: answer 304 when one tag matches (or `*`).
    pub if_none_match: Option<Vec<EntityTag>>,
    pub if_none_match_any: bool,
}

/// Parses the conditions of a PUT, PATCH or DELETE.
pub fn parse_write(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let if_match = joined(headers, &IF_MATCH)?;
    let if_none_match = joined(headers, &IF_NONE_MATCH)?;

    if let Some(value) = &if_none_match
        && value != "*"
    {
        return Err(ApiError::InvalidIfNoneMatch(value.clone()));
    }
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::ConflictingConditions),
        (None, Some(_)) => Ok(Precondition::IfNoneMatchAny),
        (Some(value), None) => match parse_tag_list(&value) {
            Some(TagList::Any) => Ok(Precondition::IfMatchAny),
            Some(TagList::Tags(tags)) => Ok(Precondition::IfMatch(tags)),
            None => Err(ApiError::InvalidIfMatch(value)),
        },
        (None, None) => Ok(Precondition::None),
    }
}

/// Parses the conditions of a GET. Both headers may be present; each may hold a list.
pub fn parse_read(headers: &HeaderMap) -> Result<ReadConditions, ApiError> {
    let mut conditions = ReadConditions::default();
    if let Some(value) = joined(headers, &IF_MATCH)? {
        match parse_tag_list(&value) {
            Some(TagList::Any) => conditions.if_match_any = true,
            Some(TagList::Tags(tags)) => conditions.if_match = Some(tags),
            None => return Err(ApiError::InvalidIfMatch(value)),
        }
    }
    if let Some(value) = joined(headers, &IF_NONE_MATCH)? {
        match parse_tag_list(&value) {
            Some(TagList::Any) => conditions.if_none_match_any = true,
            Some(TagList::Tags(tags)) => conditions.if_none_match = Some(tags),
            None => return Err(ApiError::InvalidIfNoneMatch(value)),
        }
    }
    Ok(conditions)
}

/// The value of the header that made a precondition fail, for the 412 message.
pub fn failed_condition(headers: &HeaderMap) -> (&'static str, String) {
    match joined(headers, &IF_MATCH) {
        Ok(Some(value)) => ("If-Match", value),
        _ => (
            "If-None-Match",
            joined(headers, &IF_NONE_MATCH)
                .ok()
                .flatten()
                .unwrap_or_default(),
        ),
    }
}

/// All lines of one header joined by `, ` and trimmed; `None` when absent or empty.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, ApiError> {
    let mut parts = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| {
            let lossy = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if name == IF_MATCH {
                ApiError::InvalidIfMatch(lossy)
            } else {
                ApiError::InvalidIfNoneMatch(lossy)
            }
        })?;
        let text = text.trim();
        if !text.is_empty() {
            parts.push(text);
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join(", ")))
}

enum TagList {
    Any,
    Tags(Vec<EntityTag>),
}

/// Parses `*` or a list of entity-tags; `None` when the value is malformed.
fn parse_tag_list(value: &str) -> Option<TagList> {
    if value == "*" {
        return Some(TagList::Any);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        if let Some(after_comma) = rest.strip_prefix(',') {
            // Empty list elements are allowed by the HTTP list syntax.
            rest = after_comma;
            continue;
        }
        let (tag, after) = parse_tag(rest)?;
        tags.push(tag);
        rest = after.trim_start_matches([' ', '\t']);
        match rest.strip_prefix(',') {
            Some(after_comma) => rest = after_comma,
            None if rest.is_empty() => break,
            None => return None,
        }
    }
    (!tags.is_empty()).then_some(TagList::Tags(tags))
}

/// Parses one entity-tag at the start of `input`: `"..."`, `W/"..."` or a bare token that
/// runs to the next comma. Returns the tag and the text after it.
fn parse_tag(input: &str) -> Option<(EntityTag, &str)> {
    let (weak, quoted) = match input.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    if let Some(inner) = quoted.strip_prefix('"') {
        let end = inner.find('"')?;
        let tag = EntityTag {
            value: inner[..end].to_owned(),
            weak,
        };
        return Some((tag, &inner[end + 1..]));
    }
    if weak {
        return None;
    }
    let end = input.find(',').unwrap_or(input.len());
    let token = input[..end].trim_end_matches([' ', '\t']);
    if token == "*" || token.contains('"') || token.contains([' ', '\t']) {
        return None;
    }
    let tag = EntityTag {
        value: token.to_owned(),
        weak: false,
    };
    Some((tag, &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn strong(value: &str) -> EntityTag {
        EntityTag {
            value: value.into(),
            weak: false,
        }
    }

    #[test]
    fn quoted_and_bare_tags_parse_alike() {
        for value in ["\"abc\"", "abc", "  abc  "] {
            let parsed = parse_write(&headers(&[(&IF_MATCH, value)])).unwrap();
            assert_eq!(
                parsed,
                Precondition::IfMatch(vec![strong("abc")]),
                "{value}"
            );
        }
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let parsed = parse_write(&headers(&[(&IF_MATCH, "\"a,b\", c, W/\"d\"")])).unwrap();
        let weak = EntityTag {
            value: "d".into(),
            weak: true,
        };
        assert_eq!(
            parsed,
            Precondition::IfMatch(vec![strong("a,b"), strong("c"), weak])
        );
    }

    #[test]
    fn header_lines_join_into_one_list() {
        let parsed = parse_write(&headers(&[(&IF_MATCH, "\"a\""), (&IF_MATCH, "b")])).unwrap();
        assert_eq!(
            parsed,
            Precondition::IfMatch(vec![strong("a"), strong("b")])
        );
    }

    #[test]
    fn empty_values_set_no_condition() {
        let parsed = parse_write(&headers(&[(&IF_MATCH, "  "), (&IF_NONE_MATCH, "")])).unwrap();
        assert_eq!(parsed, Precondition::None);
    }

    #[test]
    fn malformed_if_match_is_rejected() {
        for value in ["\"abc", "a, *", "*, a", "W/abc", "a b", "\"a\"b"] {
            let result = parse_write(&headers(&[(&IF_MATCH, value)]));
            assert!(
                matches!(result, Err(ApiError::InvalidIfMatch(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn if_none_match_takes_only_bare_star() {
        assert_eq!(
            parse_write(&headers(&[(&IF_NONE_MATCH, "*")])).unwrap(),
            Precondition::IfNoneMatchAny
        );
        for value in ["\"*\"", "abc", "\"abc\"", "*, *"] {
            let result = parse_write(&headers(&[(&IF_NONE_MATCH, value)]));
            assert!(
                matches!(result, Err(ApiError::InvalidIfNoneMatch(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn both_headers_are_rejected() {
        let result = parse_write(&headers(&[(&IF_MATCH, "a"), (&IF_NONE_MATCH, "*")]));
        assert!(matches!(result, Err(ApiError::ConflictingConditions)));
    }
}
