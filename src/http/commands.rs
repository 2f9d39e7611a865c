//! Command endpoints: `POST /`, path-style commands, `/pipeline` and `/multi-exec`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::extract::{Caller, RawBody, ReplyFormat, SyncToken};
use super::gate::SYNC_TOKEN_HEADER;
use super::AppState;
use crate::auth::Principal;
use crate::backend::TransactionOutcome;
use crate::dispatch::Dispatch;
use crate::error::ApiError;
use crate::policy::prepare::{prepare_with, BlockingMode};
use crate::policy::{prepare, CommandTable, Prepared, ReplyFix};
use crate::protocol::reply::{self, Frame};
use crate::protocol::request::{
    parse_command_json, parse_path_command, parse_pipeline_items_json, parse_pipeline_json,
    RequestError,
};
use crate::protocol::Command;

/// `POST /` with a JSON array body.
pub async fn json_command(
    State(state): State<AppState>,
    Caller(caller): Caller,
    format: ReplyFormat,
    SyncToken(sync): SyncToken,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let command = parse_command_json(body)?;
    count_commands(&state, std::slice::from_ref(&command));
    let state = state.for_caller(&caller)?;
    run_single(&state, &caller, format, sync, command).await
}

/// `GET|HEAD|POST|PUT /<command>/<arg>/…`: the body (if any) is the last argument.
pub async fn path_command(
    State(state): State<AppState>,
    Caller(caller): Caller,
    format: ReplyFormat,
    SyncToken(sync): SyncToken,
    method: Method,
    uri: Uri,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let body = (method == Method::POST || method == Method::PUT).then_some(body);
    let command = parse_path_command(uri.path(), body, uri.query())?;
    count_commands(&state, std::slice::from_ref(&command));
    let state = state.for_caller(&caller)?;
    run_single(&state, &caller, format, sync, command).await
}

/// Counts received commands by name for `/metrics`.
fn count_commands<'a>(state: &AppState, commands: impl IntoIterator<Item = &'a Command>) {
    let table = state.command_table();
    for command in commands {
        if let Some(name) = command.args.first() {
            crate::metrics::record_command(name, table.as_deref());
        }
    }
}

async fn run_single(
    state: &AppState,
    caller: &Principal,
    format: ReplyFormat,
    sync: Option<HeaderValue>,
    command: Command,
) -> Result<Response, ApiError> {
    let table = state.command_table();
    let dispatch =
        Dispatch::new(state.backend(), table.as_deref()).with_sync_token(sync_text(&sync));
    // RESTASH_BLOCKING=true: blocking commands block, on their own connections.
    let mode = state
        .blocking()
        .map_or(BlockingMode::Rewrite, |pool| BlockingMode::Block {
            max: pool.max_wait(),
        });
    let command = caller.authorize(command, table.as_deref())?;
    let prepared = prepare_with(
        command,
        caller.access(),
        table.as_deref(),
        state.scripts(),
        mode,
    )?;
    let frame = match (prepared.answer, prepared.wait, state.blocking()) {
        (Some(answer), _, _) => answer,
        (None, Some(wait), Some(pool)) => {
            // Boxed: a rare path, and fred's future would size every request's.
            prepared
                .fix
                .apply(Box::pin(pool.execute(prepared.args, wait)).await?)
        }
        (None, _, _) => prepared.fix.apply(dispatch.one(prepared.args).await?),
    };
    if let Some(text) = reply::error_text(&frame) {
        return Err(ApiError::Redis(text));
    }
    let response = if format.resp2 {
        let body = encoded(|body| reply::write_resp2(body, &frame));
        bytes_response(body, "application/octet-stream")
    } else {
        let body = encoded(|body| reply::write_item(body, &frame, format.encoding));
        bytes_response(body, "application/json")
    };
    Ok(with_sync_token(response, state, &dispatch, sync))
}

/// With replica reads on, answers the token that routes the caller's next reads:
/// a new one when this request wrote, else the one it echoed.
fn with_sync_token(
    mut response: Response,
    state: &AppState,
    dispatch: &Dispatch<'_>,
    echoed: Option<HeaderValue>,
) -> Response {
    if !state.backend().reads_from_replicas() {
        return response;
    }
    let value = match dispatch.sync_token() {
        Some(token) => HeaderValue::from_str(&token).ok(),
        None => echoed,
    };
    if let Some(value) = value {
        response.headers_mut().insert(SYNC_TOKEN_HEADER, value);
    }
    response
}

/// The echoed sync token as text (the extractor only keeps text values).
fn sync_text(sync: &Option<HeaderValue>) -> Option<&str> {
    sync.as_ref().and_then(|value| value.to_str().ok())
}

/// One item of a pipeline or transaction: sent to Redis with its reply fix, or
/// answered by restash itself.
enum Slot {
    Sent(ReplyFix),
    Answered(Frame),
}

/// The items of a pipeline or transaction, and the commands to send for them.
struct Batch {
    slots: Vec<Slot>,
    to_send: Vec<Vec<Bytes>>,
}

impl Batch {
    /// Authorizes and prepares every command. An item that is not a command, or a
    /// refusal, becomes that item's error, or, when `all_or_nothing` (transactions),
    /// the answer to the whole request.
    fn prepare(
        commands: Vec<Result<Command, RequestError>>,
        caller: &Principal,
        state: &AppState,
        table: Option<&CommandTable>,
        all_or_nothing: bool,
    ) -> Result<Batch, ApiError> {
        let mut batch = Batch {
            slots: Vec::with_capacity(commands.len()),
            to_send: Vec::with_capacity(commands.len()),
        };
        for command in commands {
            let command = match command {
                Ok(command) => command,
                Err(error) if all_or_nothing => return Err(error.into()),
                Err(error) => {
                    batch
                        .slots
                        .push(Slot::Answered(reply::error(error.to_string())));
                    continue;
                }
            };
            let prepared = caller
                .authorize(command, table)
                .and_then(|command| prepare(command, caller.access(), table, state.scripts()));
            match prepared {
                Ok(Prepared {
                    answer: Some(answer),
                    ..
                }) => {
                    // An error restash answers in Redis' place is a queue-time error:
                    // Redis would discard the whole transaction, and so does restash.
                    if let Some(text) = reply::error_text(&answer).filter(|_| all_or_nothing) {
                        return Err(ApiError::Redis(format!(
                            "EXECABORT Transaction discarded because of previous errors. First error: {text}"
                        )));
                    }
                    batch.slots.push(Slot::Answered(answer))
                }
                Ok(prepared) => {
                    batch.to_send.push(prepared.args);
                    batch.slots.push(Slot::Sent(prepared.fix));
                }
                Err(refusal) if all_or_nothing => return Err(refusal.into()),
                Err(refusal) => batch
                    .slots
                    .push(Slot::Answered(reply::error(refusal.to_string()))),
            }
        }
        Ok(batch)
    }

    /// Every item's answer, in order, from Redis' `replies` to the sent commands.
    fn answers(self, replies: Vec<Frame>) -> Vec<Frame> {
        let mut replies = replies.into_iter();
        self.slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Sent(fix) => fix.apply(replies.next().unwrap_or(Frame::Null)),
                Slot::Answered(frame) => frame,
            })
            .collect()
    }
}

/// `POST /pipeline`: in order, not atomic, one result per command.
pub async fn pipeline(
    State(state): State<AppState>,
    Caller(caller): Caller,
    format: ReplyFormat,
    SyncToken(sync): SyncToken,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // Only a body that is no array of items fails as a whole: the JS SDK pipelines
    // unrelated calls together, and a non-2xx answer would fail every one of them.
    let items = parse_pipeline_items_json(body)?;
    count_commands(&state, items.iter().flatten());
    let state = state.for_caller(&caller)?;
    let table = state.command_table();
    let mut batch = Batch::prepare(items, &caller, &state, table.as_deref(), false)?;
    let dispatch =
        Dispatch::new(state.backend(), table.as_deref()).with_sync_token(sync_text(&sync));
    let replies = dispatch.many(std::mem::take(&mut batch.to_send)).await?;
    let frames = batch.answers(replies);
    Ok(with_sync_token(
        encode_list(&frames, format),
        &state,
        &dispatch,
        sync,
    ))
}

/// `POST /multi-exec`: MULTI/EXEC on a dedicated connection, one result per command.
pub async fn multi_exec(
    State(state): State<AppState>,
    Caller(caller): Caller,
    format: ReplyFormat,
    SyncToken(sync): SyncToken,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    if format.resp2 {
        return Err(ApiError::BadRequest(
            "ERR Upstash-Response-Format: resp2 is not supported for /multi-exec".into(),
        ));
    }
    let commands = parse_pipeline_json(body)?;
    count_commands(&state, &commands);
    let state = state.for_caller(&caller)?;
    let table = state.command_table();
    let commands = commands.into_iter().map(Ok).collect();
    let mut batch = Batch::prepare(commands, &caller, &state, table.as_deref(), true)?;
    let dispatch =
        Dispatch::new(state.backend(), table.as_deref()).with_sync_token(sync_text(&sync));
    if batch.to_send.is_empty() {
        let answers = encode_list(&batch.answers(Vec::new()), format);
        return Ok(with_sync_token(answers, &state, &dispatch, sync));
    }
    match dispatch
        .transaction(std::mem::take(&mut batch.to_send))
        .await?
    {
        TransactionOutcome::Discarded(text) => Err(ApiError::Redis(text)),
        TransactionOutcome::Executed(replies) => Ok(with_sync_token(
            encode_list(&batch.answers(replies), format),
            &state,
            &dispatch,
            sync,
        )),
    }
}

fn encode_list(frames: &[Frame], format: ReplyFormat) -> Response {
    if format.resp2 {
        let body = encoded(|body| frames.iter().for_each(|f| reply::write_resp2(body, f)));
        return bytes_response(body, "application/octet-stream");
    }
    let body = encoded(|body| {
        body.push(b'[');
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            reply::write_item(body, frame, format.encoding);
        }
        body.push(b']');
    });
    bytes_response(body, "application/json")
}

/// Answers up to this size are written into a buffer kept by the thread and copied
/// out once: one allocation of the exact size instead of a growing `Vec` and the
/// shared header `Bytes` adds to it. Larger ones keep the buffer they were written in.
const SCRATCH_BYTES: usize = 4096;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SCRATCH_BYTES));
}

/// What `write` writes, as `Bytes`.
fn encoded(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    SCRATCH.with(|scratch| {
        let Ok(mut buffer) = scratch.try_borrow_mut() else {
            let mut body = Vec::new();
            write(&mut body);
            return Bytes::from(body);
        };
        buffer.clear();
        write(&mut buffer);
        if buffer.len() <= SCRATCH_BYTES {
            Bytes::copy_from_slice(&buffer)
        } else {
            Bytes::from(std::mem::replace(
                &mut *buffer,
                Vec::with_capacity(SCRATCH_BYTES),
            ))
        }
    })
}

fn bytes_response(body: Bytes, content_type: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
