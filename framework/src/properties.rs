//! Kafka client settings from a Java-style `client.properties` file (`--kafka-config`).
//!
//! The format is the one `java.util.Properties` reads and every Kafka tool takes:
//! one `key=value` (or `key: value`, or `key value`) per line, `#` and `!` start
//! comments, a line ending in an odd number of backslashes continues on the next, and
//! `\t`, `\n`, `\r`, `\f`, `\uXXXX` and `\<char>` are escapes.
//!
//! On top of that:
//!
//! * **Values from the environment**: `${NAME}` (or Kafka's config-provider spelling
//!   `${env:NAME}`) in a value is replaced by the environment variable `NAME`; a
//!   variable that is not set is an error naming it. `$${` writes a literal `${`.
//! * **Java's JAAS line**: `sasl.jaas.config` with `PlainLoginModule` or
//!   `ScramLoginModule` becomes librdkafka's `sasl.username` and `sasl.password`, so a
//!   Java `client.properties` works unchanged. Other Java-only keys librdkafka has no
//!   equivalent for (JKS trust stores, serializers) are refused with what to use
//!   instead.
//! * **Schema registry**: `schema.registry.*` and `basic.auth.*` keys are not client
//!   settings; they are kept apart in [`crate::config::KafkaConfig::registry`].
//! * The keys Freshet controls ([`crate::config::CONTROLLED_KEYS`]) are refused with the
//!   same message as on `-X`.
//!
//! No error message contains a value: values are where secrets are.

use std::path::Path;

use crate::config::check_passthrough;
use crate::error::{Error, Result};

/// One setting read from a properties file.
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    /// The key.
    pub key: String,
    /// The value, with escapes and `${NAME}` references resolved.
    pub value: String,
    /// The 1-based line the setting starts on.
    pub line: usize,
}

impl std::fmt::Debug for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Property")
            .field("key", &self.key)
            .field("value", &crate::config::shown_value(&self.key, &self.value))
            .field("line", &self.line)
            .finish()
    }
}

/// The settings of a `client.properties` file, sorted by where they go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientProperties {
    /// librdkafka settings, in file order (a later one overrides an earlier one).
    pub client: Vec<Property>,
    /// `schema.registry.*` and `basic.auth.*` settings, in file order.
    pub registry: Vec<Property>,
}

/// Reads and checks a `client.properties` file; values may name environment variables.
pub fn load(path: &Path) -> Result<ClientProperties> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("--kafka-config {}: {e}", path.display())))?;
    from_str(&text, |name| std::env::var(name).ok())
        .map_err(|e| Error::Config(format!("--kafka-config {}:{e}", path.display())))
}

/// Parses and checks properties text, resolving `${NAME}` with `env`. Errors start
/// with the line number (`12: ...`) and never contain a value.
pub fn from_str(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ClientProperties, String> {
    let mut out = ClientProperties::default();
    for raw in parse(text)? {
        let at = raw.line;
        let value = substitute(&raw.value, &env).map_err(|e| format!("{at}: {}: {e}", raw.key))?;
        let key = raw.key;
        if key.starts_with("schema.registry.") || key.starts_with("basic.auth.") {
            out.registry.push(Property {
                key,
                value,
                line: at,
            });
            continue;
        }
        if let Some(hint) = java_only(&key) {
            return Err(format!(
                "{at}: '{key}' is a Java client setting librdkafka does not have: {hint}"
            ));
        }
        if key == "sasl.jaas.config" {
            let (user, password) =
                jaas(&value).map_err(|e| format!("{at}: sasl.jaas.config: {e}"))?;
            for (key, value) in [("sasl.username", user), ("sasl.password", password)] {
                out.client.push(Property {
                    key: key.into(),
                    value,
                    line: at,
                });
            }
            continue;
        }
        check_passthrough(&key, &value).map_err(|e| format!("{at}: {e}"))?;
        out.client.push(Property {
            key,
            value,
            line: at,
        });
    }
    Ok(out)
}

/// Java client keys with no librdkafka equivalent, and what to use instead.
fn java_only(key: &str) -> Option<&'static str> {
    Some(match key {
        "ssl.truststore.location" | "ssl.truststore.password" | "ssl.truststore.type"
        | "ssl.truststore.certificates" => {
            "librdkafka reads CA certificates as PEM: export them (keytool -exportcert -rfc) and set ssl.ca.location (or ssl.ca.pem)"
        }
        "ssl.keystore.type" | "ssl.keystore.key" | "ssl.keystore.certificate.chain" => {
            "librdkafka takes a PKCS#12 ssl.keystore.location, or PEM ssl.certificate.location and ssl.key.location"
        }
        "key.serializer" | "value.serializer" | "key.deserializer" | "value.deserializer" => {
            "records are (de)serialised by the job's codecs (freshet::codec), not by the client"
        }
        "sasl.login.callback.handler.class" | "sasl.client.callback.handler.class" => {
            "librdkafka has no callback classes (and Freshet's build has no OAUTHBEARER OIDC: it needs libcurl; see docs/connecting.md)"
        }
        _ => return None,
    })
}

/// The user name and password of a `sasl.jaas.config` value for `PlainLoginModule` or
/// `ScramLoginModule`.
fn jaas(value: &str) -> Result<(String, String), String> {
    let mut words = JaasWords::new(value);
    let module = words.next_word().ok_or("empty value")?;
    let short = module.rsplit('.').next().unwrap_or(&module);
    if !matches!(short, "PlainLoginModule" | "ScramLoginModule") {
        let hint = if short == "OAuthBearerLoginModule" {
            "; OAUTHBEARER takes librdkafka's sasl.oauthbearer.* settings, and Freshet's build has no OIDC token fetching (it needs libcurl; see docs/connecting.md)"
        } else {
            ""
        };
        return Err(format!(
            "login module '{short}' is not supported (PlainLoginModule and ScramLoginModule are){hint}"
        ));
    }
    let flag = words
        .next_word()
        .ok_or("no control flag after the login module")?;
    if !matches!(
        flag.as_str(),
        "required" | "requisite" | "sufficient" | "optional"
    ) {
        return Err("the login module must be followed by a control flag (required)".into());
    }
    let (mut user, mut password) = (None, None);
    loop {
        let Some(name) = words.next_word() else {
            return Err("missing the closing ';'".into());
        };
        if name == ";" {
            break;
        }
        if !words.eat('=') {
            return Err(format!("option '{name}' has no '='"));
        }
        let value = words
            .next_value()
            .ok_or_else(|| format!("option '{name}' has no value"))?;
        match name.as_str() {
            "username" => user = Some(value),
            "password" => password = Some(value),
            _ => {}
        }
    }
    if words.next_word().is_some() {
        return Err("text after the closing ';' (one login module only)".into());
    }
    match (user, password) {
        (Some(u), Some(p)) => Ok((u, p)),
        (None, _) => Err("no username=\"...\" option".into()),
        (_, None) => Err("no password=\"...\" option".into()),
    }
}

/// A tokenizer for JAAS configuration text: words, `=`, `;`, quoted values.
struct JaasWords<'a> {
    rest: &'a str,
}

impl<'a> JaasWords<'a> {
    fn new(text: &'a str) -> Self {
        JaasWords { rest: text }
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    /// A bare word, or `;`.
    fn next_word(&mut self) -> Option<String> {
        self.skip_space();
        if self.eat(';') {
            return Some(";".into());
        }
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == ';')
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_string())
    }

    /// A value: `"..."` or `'...'` (backslash escapes the next character), or a bare word.
    fn next_value(&mut self) -> Option<String> {
        self.skip_space();
        let quote = self.rest.chars().next()?;
        if quote != '"' && quote != '\'' {
            return self.next_word().filter(|w| w != ";");
        }
        let mut out = String::new();
        let mut chars = self.rest[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                c if c == quote => {
                    self.rest = &self.rest[1 + i + 1..];
                    return Some(out);
                }
                c => out.push(c),
            }
        }
        None
    }
}

/// Replaces `${NAME}` and `${env:NAME}` with the variable's value; `$${` is a literal `${`.
fn substitute(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or("'${' without a closing '}' (write $${ for a literal ${)")?;
            let spec = &tail[..end];
            let name = spec.strip_prefix("env:").unwrap_or(spec);
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "'${{{spec}}}' is not an environment variable reference (${{NAME}} or ${{env:NAME}}, NAME of letters, digits and _)"
                ));
            }
            let v = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&v);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits Java properties text into (key, value, line) with escapes resolved; values
/// are not yet substituted.
pub fn parse(text: &str) -> Result<Vec<Property>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let start = i + 1;
        let first = line.trim_start_matches([' ', '\t', '\x0c']);
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes.
        let mut logical = String::new();
        let mut current = first;
        loop {
            let trailing = current.len() - current.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                logical.push_str(&current[..current.len() - 1]);
                match lines.next() {
                    Some((_, next)) => current = next.trim_start_matches([' ', '\t', '\x0c']),
                    None => break,
                }
            } else {
                logical.push_str(current);
                break;
            }
        }
        let (key, value) = split_key_value(&logical);
        let key = unescape(key).map_err(|e| format!("{start}: {e}"))?;
        let value = unescape(value).map_err(|e| format!("{start}: {key}: {e}"))?;
        if key.is_empty() {
            return Err(format!("{start}: a line with an empty key"));
        }
        out.push(Property {
            key,
            value,
            line: start,
        });
    }
    Ok(out)
}

/// The raw key and value of one logical line (escapes still in place).
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let i = i.min(bytes.len());
    let key = &line[..i];
    let mut rest = line[i..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

/// Resolves Java properties escapes.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or("malformed \\uXXXX escape")?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KAFKA_SECRET" => Some("s3cr3t=x".into()),
            "USER_NAME" => Some("alice".into()),
            _ => None,
        }
    }

    fn kv(p: &[Property]) -> Vec<(&str, &str)> {
        p.iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn java_properties_syntax() {
        let text = "# comment\n! also a comment\n\n  security.protocol = SASL_SSL\nsasl.mechanism:PLAIN\nclient.id my-client\nlong.value=a,\\\n    b,\\\n    c\nesc\\=aped.key=tab\\there\\u0041\nempty=\n";
        let p = parse(text).unwrap();
        assert_eq!(
            kv(&p),
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("client.id", "my-client"),
                ("long.value", "a,b,c"),
                ("esc=aped.key", "tab\thereA"),
                ("empty", ""),
            ]
        );
        assert_eq!(p[0].line, 4);
        assert_eq!(p[3].line, 7);
        assert!(parse("x=\\u12").unwrap_err().starts_with("1: x:"));
    }

    #[test]
    fn environment_values_are_substituted() {
        let p = from_str(
            "sasl.username=${USER_NAME}\nsasl.password=${env:KAFKA_SECRET}\nclient.id=$${literal}-$5\n",
            env,
        )
        .unwrap();
        assert_eq!(
            kv(&p.client),
            vec![
                ("sasl.username", "alice"),
                ("sasl.password", "s3cr3t=x"),
                ("client.id", "${literal}-$5"),
            ]
        );
        let missing = from_str("sasl.password=${NOPE}\n", env).unwrap_err();
        assert_eq!(
            missing,
            "1: sasl.password: environment variable NOPE is not set"
        );
        assert!(from_str("a=${NOPE\n", env)
            .unwrap_err()
            .contains("without a closing"));
        assert!(from_str("a=${a b}\n", env)
            .unwrap_err()
            .contains("not an environment variable reference"));
    }

    #[test]
    fn controlled_keys_are_refused_with_the_passthrough_message() {
        for key in crate::config::CONTROLLED_KEYS {
            let from_file = from_str(&format!("# x\n{key}=v\n"), env).unwrap_err();
            let from_flag = crate::config::parse_passthrough(&format!("{key}=v")).unwrap_err();
            assert_eq!(from_file, format!("2: {from_flag}"));
        }
    }

    #[test]
    fn jaas_lines_become_username_and_password() {
        let text = "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='KEY1' password=\"${KAFKA_SECRET}\";\n";
        let p = from_str(text, env).unwrap();
        assert_eq!(
            kv(&p.client),
            vec![("sasl.username", "KEY1"), ("sasl.password", "s3cr3t=x")]
        );
        let scram = "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  username=\"u\" \\\n  password=\"p\\\\\"q\";";
        assert_eq!(
            kv(&from_str(scram, env).unwrap().client),
            vec![("sasl.username", "u"), ("sasl.password", "p\"q")]
        );
        for (bad, why) in [
            (
                "x.OAuthBearerLoginModule required;",
                "no OIDC token fetching",
            ),
            ("x.PlainLoginModule required username=\"u\";", "no password"),
            ("x.PlainLoginModule username=\"u\";", "control flag"),
            (
                "x.PlainLoginModule required username=\"u\" password=\"p\"",
                "closing ';'",
            ),
            (
                "x.PlainLoginModule required username=\"u\" password=\"p",
                "has no value",
            ),
        ] {
            let e = from_str(&format!("sasl.jaas.config={bad}\n"), env).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("\"p"), "an error shows a value: {e}");
        }
    }

    #[test]
    fn registry_and_java_only_keys_are_sorted_out() {
        let p = from_str(
            "schema.registry.url=http://r:8081\nbasic.auth.user.info=k:${KAFKA_SECRET}\nacks=all\n",
            env,
        )
        .unwrap();
        assert_eq!(kv(&p.client), vec![("acks", "all")]);
        assert_eq!(
            kv(&p.registry),
            vec![
                ("schema.registry.url", "http://r:8081"),
                ("basic.auth.user.info", "k:s3cr3t=x")
            ]
        );
        let e = from_str("ssl.truststore.location=/x.jks\n", env).unwrap_err();
        assert!(e.contains("ssl.ca.location"), "{e}");
    }
}
