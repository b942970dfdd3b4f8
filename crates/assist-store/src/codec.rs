//! Column codecs that let one SQL text serve both databases with each one's own types.
//!
//! Timestamps are RFC 3339 strings in the API. SQLite stores them as that TEXT (as it always
//! has); PostgreSQL as `TIMESTAMPTZ`, so they compare, index and sort as times there.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A timestamp to bind: TEXT in SQLite, `TIMESTAMPTZ` in PostgreSQL (parsed from RFC 3339 when
/// bound; a string that is not RFC 3339 fails the query instead of being stored).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ts<'a>(pub(crate) &'a str);

impl Type<Sqlite> for Ts<'_> {
    fn type_info() -> SqliteTypeInfo {
        <&str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Ts<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Sqlite>>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Postgres> for Ts<'_> {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

// `Vec<Ts>` binds as `TIMESTAMPTZ[]` (PostgreSQL's batched writes), each element parsed so.
impl PgHasArrayType for Ts<'_> {
    fn array_type_info() -> PgTypeInfo {
        <OffsetDateTime as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for Ts<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let t = OffsetDateTime::parse(self.0, &Rfc3339)
            .map_err(|e| format!("'{}' is not an RFC 3339 time: {e}", self.0))?;
        <OffsetDateTime as Encode<Postgres>>::encode_by_ref(&t, buf)
    }
}

/// A timestamp read back as RFC 3339 text (UTC, `Z`, microseconds when not whole seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsText(pub(crate) String);

impl Type<Sqlite> for TsText {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for TsText {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<String as Decode<Sqlite>>::decode(value)?))
    }
}

impl Type<Postgres> for TsText {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for TsText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let t = <OffsetDateTime as Decode<Postgres>>::decode(value)?;
        Ok(Self(t.to_offset(time::UtcOffset::UTC).format(&Rfc3339)?))
    }
}
