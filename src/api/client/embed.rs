//! `/v1/embed`: sentence embeddings of a list of texts, from the node's embedding model (its
//! worker processes). Nothing is written; any node answers. 503 naming the setting when no
//! model is configured, 413 over the configured limits.

use actix_web::{web, HttpResponse};
use cograft_actors::inference::Embed;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/embed", web::post().to(embed));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedBody {
    texts: Vec<String>,
}

async fn embed(state: web::Data<AppState>, body: web::Json<EmbedBody>) -> Result<HttpResponse, ApiError> {
    let reply = state.inference.send(Embed { texts: body.into_inner().texts }).await??;
    Ok(HttpResponse::Ok().json(reply))
}
