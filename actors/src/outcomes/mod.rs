//! What the node learns from the outcome history the state machine records (observations):
//! anomalies by robust statistics (`anomalies`). Pure functions over observations read from
//! storage, so every node answers the same for the same applied index.

pub mod anomalies;
