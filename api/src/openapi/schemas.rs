//! Schemas the derive cannot state: `MessageInput` (a string or parts) and labels (bounded
//! keys and values).

use std::borrow::Cow;

use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::dto::{MessageInput, UserPart};

/// No NUL anywhere (PostgreSQL text and jsonb cannot hold it).
pub const NO_NUL: &str = r"^[^\u0000]*$";
/// Not blank (a character outside Rust's `char::is_whitespace`), no NUL.
pub const NOT_BLANK: &str = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";

impl PartialSchema for MessageInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "A non-blank string (at most 524,288 characters), or 1 to 100 user parts.",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(512 * 1024))
                    .pattern(Some(NOT_BLANK)),
            )
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(UserPart::name()))
                    .min_items(Some(1))
                    .max_items(Some(100)),
            )
            .into()
    }
}

impl ToSchema for MessageInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("MessageInput")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UserPart::name().into_owned(), UserPart::schema()));
        <UserPart as ToSchema>::schemas(schemas);
    }
}

/// `labels` in requests: at most 50 entries, keys 1 to 64 characters, string values of at
/// most 256 characters, no NUL; `null` is the same as absent.
pub fn labels_or_null() -> Schema {
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(NO_NUL));
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(256))
        .pattern(Some(NO_NUL));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(50))
        .property_names(Some(key))
        .additional_properties(Some(value))
        .description(Some(
            "At most 50 labels; keys 1 to 64 characters, values strings of at most 256 \
             characters, no NUL.",
        ))
        .into()
}

/// A tool name in an MCP server's allow or deny list: 1 to 128 characters, no control
/// characters.
pub fn tool_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(chatd_shared::db::mcp::MAX_TOOL_NAME_CHARS))
        .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]+(?!\n)$"))
}

/// An MCP server's `tool_allowlist` / `tool_denylist`: at most 256 names; `null` allowed.
pub fn tool_list_or_null() -> Schema {
    let list = ArrayBuilder::new()
        .items(tool_name())
        .max_items(Some(chatd_shared::db::mcp::MAX_TOOL_LIST));
    OneOfBuilder::new()
        .item(list)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// The `headers` of an MCP server's `headers` auth: 1 to 32 entries; names of HTTP token
/// characters (1-128), not one chatd sets itself (any case); values of 1 to 4096 visible
/// ASCII characters.
pub fn mcp_headers() -> Schema {
    let reserved: Vec<String> = chatd_shared::db::mcp::RESERVED_HEADERS
        .iter()
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c)
                    } else {
                        regex_escape(c)
                    }
                })
                .collect()
        })
        .collect();
    let name_pattern = format!(
        r"^(?!(?:{})$)[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,128}}(?!\n)$",
        reserved.join("|")
    );
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(chatd_shared::db::mcp::MAX_HEADER_VALUE_CHARS))
        .pattern(Some(r"^[\x20-\x7e]+(?!\n)$"));
    let mut schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(value))
        .min_properties(Some(1))
        .max_properties(Some(chatd_shared::db::mcp::MAX_HEADERS))
        .build();
    schema.property_names = Some(Box::new(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(name_pattern))
            .into(),
    ));
    Schema::Object(schema)
}

fn regex_escape(c: char) -> String {
    if "\\.+*?()|[]{}^$-".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}
