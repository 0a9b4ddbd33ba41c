//! Recognising SSM parameter policies in `DescribeParameters` answers.
//!
//! AWS returns `PolicyType` = `NoChangeNotification` (or `Expiration`,
//! `ExpirationNotification`) and `PolicyText` = the policy's JSON. moto 5.2.5 returns both
//! fields as a Python repr of the policy object (`{'Type': 'NoChangeNotification', …}`).
//! The agent follows AWS and tolerates moto: it reads the type field when it is a bare type
//! name, and otherwise finds the `Type` key in whichever text it has.

/// The policy's type (`NoChangeNotification`, `Expiration`, …) from either shape.
pub fn policy_type(policy_type: Option<&str>, policy_text: Option<&str>) -> Option<String> {
    if let Some(t) = policy_type {
        let t = t.trim();
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Some(t.to_string());
        }
    }
    [policy_text, policy_type]
        .into_iter()
        .flatten()
        .find_map(type_key)
}

/// The value of the `Type` key in JSON (`"Type": "X"`) or a Python repr (`'Type': 'X'`).
fn type_key(text: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let key = format!("{quote}Type{quote}");
        let Some(at) = text.find(&key) else { continue };
        let rest = text[at + key.len()..].trim_start();
        let rest = rest.strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix(['"', '\''])?;
        let value: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if !value.is_empty() {
            return Some(value);
        }
    }
    None
}

pub const NO_CHANGE_NOTIFICATION: &str = "NoChangeNotification";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_aws_shape() {
        let text = r#"{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"30","Unit":"Days"}}"#;
        assert_eq!(
            policy_type(Some("NoChangeNotification"), Some(text)).as_deref(),
            Some(NO_CHANGE_NOTIFICATION)
        );
        assert_eq!(
            policy_type(Some("Expiration"), Some(r#"{"Type":"Expiration"}"#)).as_deref(),
            Some("Expiration")
        );
    }

    #[test]
    fn reads_the_moto_shape() {
        let repr = "{'Type': 'NoChangeNotification', 'Version': '1.0', 'Attributes': {'After': '30', 'Unit': 'Days'}}";
        assert_eq!(
            policy_type(Some(repr), Some(repr)).as_deref(),
            Some(NO_CHANGE_NOTIFICATION)
        );
        let expiration = "{'Type': 'ExpirationNotification', 'Version': '1.0'}";
        assert_eq!(
            policy_type(Some(expiration), None).as_deref(),
            Some("ExpirationNotification")
        );
    }

    #[test]
    fn json_with_spaces_and_missing_type() {
        assert_eq!(
            policy_type(None, Some(r#"{ "Type" : "NoChangeNotification" }"#)).as_deref(),
            Some(NO_CHANGE_NOTIFICATION)
        );
        assert_eq!(policy_type(None, Some(r#"{"Version":"1.0"}"#)), None);
        assert_eq!(policy_type(Some(""), None), None);
    }
}
