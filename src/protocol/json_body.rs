//! One pass over a JSON request body, straight into [`Command`]s.
//!
//! serde_json checks the whole body's syntax while these visitors build each
//! command's arguments as slices of the body (see [`super::request`] for the
//! argument rules). A body that is valid JSON but not a command (`null` as an
//! argument, an object instead of an array, …) is remembered as the first
//! [`RequestError`] met in document order (for a pipeline's items, per item), and
//! parsing carries on, so a syntax error anywhere in the body still wins, as it
//! would with a parse-then-check.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::request::{argument_from_raw, is_valid_name_bytes, Command, RequestError};

/// Parses `body` (UTF-8 text of `bytes`) as one command array.
pub fn command(bytes: &Bytes, body: &str) -> Result<Command, RequestError> {
    let problem = RefCell::new(None);
    let seed = CommandSeed {
        body: bytes,
        problem: &problem,
        not_array: RequestError::NotAnArray,
    };
    let command = parse(body, seed)?;
    match problem.into_inner() {
        Some(error) => Err(error),
        None => Ok(command),
    }
}

/// Parses `body` (UTF-8 text of `bytes`) as an array of command arrays; the first
/// item that is not a command fails the whole body.
pub fn pipeline(bytes: &Bytes, body: &str) -> Result<Vec<Command>, RequestError> {
    pipeline_items(bytes, body)?.into_iter().collect()
}

/// Parses `body` (UTF-8 text of `bytes`) as an array of command arrays, each item on
/// its own: an array that is not a command (a `null` argument, …) is that item's
/// error. Malformed JSON, a body that is not an array of arrays and an empty array
/// fail the whole body.
pub fn pipeline_items(
    bytes: &Bytes,
    body: &str,
) -> Result<Vec<Result<Command, RequestError>>, RequestError> {
    let problem = RefCell::new(None);
    let seed = PipelineSeed {
        body: bytes,
        problem: &problem,
    };
    let items = parse(body, seed)?;
    match problem.into_inner() {
        Some(error) => Err(error),
        None if items.is_empty() => Err(RequestError::EmptyPipeline),
        None => Ok(items),
    }
}

/// Runs `seed` over the whole of `body`; trailing non-whitespace is an error.
fn parse<'de, S: DeserializeSeed<'de>>(body: &'de str, seed: S) -> Result<S::Value, RequestError> {
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let value = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| RequestError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// Keeps the first problem met; later ones are ignored.
fn remember(problem: &RefCell<Option<RequestError>>, error: RequestError) {
    let mut slot = problem.borrow_mut();
    if slot.is_none() {
        *slot = Some(error);
    }
}

/// Reads one JSON value that should be a command array.
struct CommandSeed<'a> {
    body: &'a Bytes,
    problem: &'a RefCell<Option<RequestError>>,
    /// What to remember when the value is not an array.
    not_array: RequestError,
}

impl<'de> DeserializeSeed<'de> for CommandSeed<'_> {
    type Value = Command;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Command, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CommandSeed<'_> {
    type Value = Command;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON array of command arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
        let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        let mut failed = false;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if failed {
                continue;
            }
            let position = args.len() + 1;
            match argument_from_raw(self.body, raw, position) {
                Ok(arg) if position == 1 && !is_command_name(raw, &arg) => {
                    remember(self.problem, RequestError::BadCommandName);
                    failed = true;
                }
                Ok(arg) => args.push(arg),
                Err(error) => {
                    remember(self.problem, error);
                    failed = true;
                }
            }
        }
        if args.is_empty() && !failed {
            remember(self.problem, RequestError::EmptyCommand);
        }
        Ok(Command { args })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Command, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.not_an_array())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Command, E> {
        Ok(self.not_an_array())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Command, E> {
        Ok(self.not_an_array())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Command, E> {
        Ok(self.not_an_array())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Command, E> {
        Ok(self.not_an_array())
    }

    fn visit_str<E>(self, _: &str) -> Result<Command, E> {
        Ok(self.not_an_array())
    }

    fn visit_unit<E>(self) -> Result<Command, E> {
        Ok(self.not_an_array())
    }
}

impl CommandSeed<'_> {
    fn not_an_array(self) -> Command {
        remember(self.problem, self.not_array);
        Command { args: Vec::new() }
    }
}

/// A command name is a JSON string (not a number or boolean) of valid name bytes.
fn is_command_name(raw: &RawValue, name: &Bytes) -> bool {
    raw.get().starts_with('"') && is_valid_name_bytes(name)
}

/// Reads the top-level array of a pipeline or transaction.
struct PipelineSeed<'a> {
    body: &'a Bytes,
    problem: &'a RefCell<Option<RequestError>>,
}

/// Each item of a pipeline: its command, or what made it not one.
type Items = Vec<Result<Command, RequestError>>;

impl<'de> DeserializeSeed<'de> for PipelineSeed<'_> {
    type Value = Items;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Items, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PipelineSeed<'_> {
    type Value = Items;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON array of commands")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        loop {
            let problem = RefCell::new(None);
            let seed = CommandSeed {
                body: self.body,
                problem: &problem,
                not_array: RequestError::NotAnArrayOfCommands,
            };
            match seq.next_element_seed(seed)? {
                // An item that is no array at all is a body of the wrong shape (often one
                // command sent to /pipeline): the whole body's error.
                Some(_)
                    if matches!(*problem.borrow(), Some(RequestError::NotAnArrayOfCommands)) =>
                {
                    remember(self.problem, RequestError::NotAnArrayOfCommands);
                }
                Some(command) => items.push(match problem.into_inner() {
                    Some(error) => Err(error),
                    None => Ok(command),
                }),
                None => return Ok(items),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.not_an_array())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Items, E> {
        Ok(self.not_an_array())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Items, E> {
        Ok(self.not_an_array())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Items, E> {
        Ok(self.not_an_array())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Items, E> {
        Ok(self.not_an_array())
    }

    fn visit_str<E>(self, _: &str) -> Result<Items, E> {
        Ok(self.not_an_array())
    }

    fn visit_unit<E>(self) -> Result<Items, E> {
        Ok(self.not_an_array())
    }
}

impl PipelineSeed<'_> {
    fn not_an_array(self) -> Items {
        remember(self.problem, RequestError::NotAnArrayOfCommands);
        Vec::new()
    }
}
