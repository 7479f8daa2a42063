//! The catalog's routes, `/api/v1/recordings...`, over `warden_actors::catalog`.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /recordings` | 201 + `Location`, the recording (metadata and tracklist may come with it) |
//! | `GET /recordings?limit&cursor&key&value` | 200, a page; `meta.next_cursor` |
//! | `GET /recordings/{id}` | 200 with metadata and tracklist |
//! | `PATCH /recordings/{id}` | 200, the recording after the change |
//! | `DELETE /recordings/{id}` | 204 |
//! | `PUT /recordings/{id}/metadata/{key}` (`{"value": ...}`) | 200, the recording |
//! | `DELETE /recordings/{id}/metadata/{key}` | 204 |
//! | `PUT /recordings/{id}/tracklist` (`{source, tracks, cue_file_path}`) | 200, the recording |
//! | `DELETE /recordings/{id}/tracklist` | 204 |
//!
//! Handlers only translate: the body, the path and the query are parsed here (422 when they
//! cannot be), the rules of the data (lengths, hashes, `start_time`, a limit in range) are the
//! library's, checked before any SQL, and each write is one transaction there, so a request
//! that fails anywhere leaves nothing behind.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use warden_actors::catalog::{Catalog, ListQuery, NewRecording, RecordingPatch, TracklistInput};

use super::{
    envelope,
    error::ApiError,
    extract::{path_text, path_uuid, JsonBody},
    resource,
};

/// Registers the routes (inside the `/api/v1` scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/recordings", "GET, POST")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/recordings/{id}", "GET, PATCH, DELETE")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .service(
        resource("/recordings/{id}/metadata/{key}", "PUT, DELETE")
            .route(web::put().to(put_metadata))
            .route(web::delete().to(delete_metadata)),
    )
    .service(
        resource("/recordings/{id}/tracklist", "PUT, DELETE")
            .route(web::put().to(put_tracklist))
            .route(web::delete().to(delete_tracklist)),
    );
}

/// The body of `PUT .../metadata/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataValue {
    value: String,
}

async fn create(
    catalog: web::Data<Catalog>,
    JsonBody(new): JsonBody<NewRecording>,
) -> Result<HttpResponse, ApiError> {
    let rec = catalog.create(new).await?;
    envelope::created(&format!("/api/v1/recordings/{}", rec.id), &rec)
}

async fn list(catalog: web::Data<Catalog>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: ListQuery = super::extract::query(&req)?;
    let page = catalog.list(q).await?;
    envelope::page(&page.items, page.next_cursor)
}

async fn get(catalog: web::Data<Catalog>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    envelope::ok(&catalog.get(id).await?)
}

async fn update(
    catalog: web::Data<Catalog>,
    req: HttpRequest,
    JsonBody(patch): JsonBody<RecordingPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    envelope::ok(&catalog.update(id, patch).await?)
}

async fn delete(catalog: web::Data<Catalog>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    catalog.delete(id).await?;
    Ok(envelope::no_content())
}

async fn put_metadata(
    catalog: web::Data<Catalog>,
    req: HttpRequest,
    JsonBody(body): JsonBody<MetadataValue>,
) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    let key = path_text(&req, "key")?;
    envelope::ok(&catalog.put_metadata(id, key, body.value).await?)
}

async fn delete_metadata(
    catalog: web::Data<Catalog>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    let key = path_text(&req, "key")?;
    catalog.delete_metadata(id, key).await?;
    Ok(envelope::no_content())
}

async fn put_tracklist(
    catalog: web::Data<Catalog>,
    req: HttpRequest,
    JsonBody(tl): JsonBody<TracklistInput>,
) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    envelope::ok(&catalog.put_tracklist(id, tl).await?)
}

async fn delete_tracklist(
    catalog: web::Data<Catalog>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = path_uuid(&req, "id")?;
    catalog.delete_tracklist(id).await?;
    Ok(envelope::no_content())
}
