//! Schema files as users have them: `.avsc` JSON (with the `//` comments
//! that the datagen connector's quickstarts carry), the quickstarts' `.avro`
//! files (which hold schema JSON, not data), and Avro object container files,
//! whose header carries the schema.

use std::path::Path;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::error::{DatagenError, Result};

/// The magic bytes that open an Avro object container file.
const CONTAINER_MAGIC: &[u8; 4] = b"Obj\x01";

/// The schema JSON of a schema file's bytes: container header or JSON text.
pub(crate) fn schema_json(bytes: &[u8]) -> Result<Json> {
    if bytes.starts_with(CONTAINER_MAGIC) {
        return container_schema_json(bytes);
    }
    let text = String::from_utf8_lossy(bytes);
    parse_json_with_comments(&text)
}

/// Reads a schema file.
pub(crate) fn read_schema_file(path: &Path) -> Result<Json> {
    let bytes = std::fs::read(path).map_err(|source| DatagenError::Read {
        path: path.to_owned(),
        source,
    })?;
    schema_json(&bytes)
}

/// JSON text with `//` line comments and `/* */` block comments outside
/// strings (a URL's `//` inside a string stays).
pub(crate) fn parse_json_with_comments(text: &str) -> Result<Json> {
    serde_json::from_str(&strip_comments(text)).map_err(DatagenError::Json)
}

/// Replaces comments outside strings with spaces, so that serde_json's line
/// and column numbers still point into the user's file.
pub(crate) fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                // To the end of the line; the newline itself stays.
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                chars.next();
                out.push_str("  ");
                let mut last = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The `avro.schema` entry of a container file's header: after the magic,
/// the header's metadata is an Avro `map<bytes>`.
fn container_schema_json(bytes: &[u8]) -> Result<Json> {
    let metadata_schema = Schema::Map(apache_avro::schema::MapSchema {
        types: Box::new(Schema::Bytes),
        attributes: Default::default(),
    });
    let mut rest = &bytes[CONTAINER_MAGIC.len()..];
    let metadata = apache_avro::reader::datum::GenericDatumReader::builder(&metadata_schema)
        .build()
        .and_then(|reader| reader.read_value(&mut rest))
        .map_err(|e| DatagenError::Container(Box::new(e)))?;
    let Value::Map(entries) = metadata else {
        return Err(DatagenError::Annotation {
            path: "<container>".into(),
            problem: "the header's metadata is not a map".into(),
        });
    };
    match entries.get("avro.schema") {
        Some(Value::Bytes(schema)) => {
            serde_json::from_slice(schema.as_slice()).map_err(DatagenError::Json)
        }
        _ => Err(DatagenError::Annotation {
            path: "<container>".into(),
            problem: "the header has no avro.schema entry".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_go_but_slashes_in_strings_stay() {
        let text = r#"{
            // a comment
            "url": "http://example.com//x", /* block
            comment */ "n": 1 // trailing
        }"#;
        let json = parse_json_with_comments(text).unwrap();
        assert_eq!(json["url"], "http://example.com//x");
        assert_eq!(json["n"], 1);
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let json = parse_json_with_comments(
            r#"{"a": "say \"//hi\"" // c
        }"#,
        )
        .unwrap();
        assert_eq!(json["a"], "say \"//hi\"");
    }

    #[test]
    fn a_container_header_gives_its_schema() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#,
        )
        .unwrap();
        let mut writer = apache_avro::Writer::new(&schema, Vec::new()).unwrap();
        writer
            .append_value(Value::Record(vec![("a".into(), Value::Int(3))]))
            .unwrap();
        let bytes = writer.into_inner().unwrap();
        let json = schema_json(&bytes).unwrap();
        assert_eq!(json["name"], "r");
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert!(schema_json(b"Obj\x01\xff\xff").is_err());
        assert!(schema_json(b"{not json").is_err());
        assert!(schema_json(&[0xff, 0xfe]).is_err());
    }
}
