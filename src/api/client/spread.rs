//! `/v1/spread`: recall by association in one memory space. The handler hands the request to
//! the spreading pool and answers its reply, which names the applied index it reflects (any
//! node answers from its own index; there is no read barrier).

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::spreading::params::SpreadRequest;
use cograft_actors::spreading::RunSpread;

use super::space_of;
use crate::api::error::ApiError;
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/spread", web::post().to(spread));
}

async fn spread(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SpreadRequest>,
) -> Result<HttpResponse, ApiError> {
    let received = Instant::now();
    let space = space_of(&req)?;
    let reply = state.spreading.send(RunSpread { space, request: body.into_inner(), received }).await??;
    Ok(HttpResponse::Ok().json(reply))
}
