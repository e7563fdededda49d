// The rtbserve model-server contract.
//
// An SSP's auction server asks which demand partners (bidders) are worth sending
// a bid request to. It passes the OpenRTB 2.5/2.6 request as the raw JSON bytes it
// already holds, so nothing is re-encoded on the hot path.

namespace py rtbserve
namespace java io.rtbserve.thrift
namespace go rtbserve

// The request bytes are not valid JSON, or not a JSON object.
exception InvalidJson {
  1: string message
}

// A field the OpenRTB spec requires (id, imp, imp.id) is absent or has the wrong type.
exception MissingField {
  1: string message
  2: string field
}

// A candidate bidder the model was not trained on.
exception UnknownBidder {
  1: string message
  2: list<string> bidders
}

// More candidate bidders in one call than the server allows.
exception TooManyBidders {
  1: string message
  2: i32 limit
  3: i32 requested
}

// More requests in one batch call than the server allows.
exception BatchTooLarge {
  1: string message
  2: i32 limit
  3: i32 requested
}

struct BidderScore {
  1: string bidder
  // P(bidder bids | request), from the model.
  2: double probability
  // probability >= the bidder's threshold, chosen at training time to keep >= 99% of bids.
  3: bool forward
}

struct ScoreResponse {
  1: string request_id
  2: string model_version
  // One entry per candidate bidder, in the order asked for (or the model's order when none were named).
  3: list<BidderScore> scores
}

struct ScoreRequest {
  1: binary bid_request
  2: list<string> bidders
}

// One batch entry: exactly one of response or error_type is set.
struct BatchResult {
  1: optional ScoreResponse response
  // The exception name a single call would have raised: InvalidJson, MissingField, UnknownBidder, TooManyBidders.
  2: optional string error_type
  3: optional string error_message
}

struct ModelInfo {
  1: string name
  2: string version
  3: string sha256
  4: list<string> bidders
  5: i32 feature_count
  // Which prediction path serves: "native" (compiled tree evaluator) or "xgboost".
  6: string backend
  7: map<string, double> thresholds
  // What a capacity profile records of the model and the pod (rtbserve capacity); optional,
  // so clients generated before these fields keep working.
  8: optional i32 trees
  9: optional i32 max_depth
  10: optional i32 workers
  // vCPUs the server's container may use (its cgroup quota, else the CPUs it may run on).
  11: optional double cpu_limit
  12: optional string cpu_model
  // As Kubernetes names it: amd64 or arm64.
  13: optional string arch
}

service ModelServer {
  // Score one bid request against candidate bidders (empty list: every bidder the model knows).
  ScoreResponse score(1: binary bid_request, 2: list<string> bidders)
    throws (1: InvalidJson invalid_json, 2: MissingField missing_field,
            3: UnknownBidder unknown_bidder, 4: TooManyBidders too_many_bidders)

  // Score many requests in one round trip; a bad request fails only its own entry.
  list<BatchResult> score_batch(1: list<ScoreRequest> requests)
    throws (1: BatchTooLarge batch_too_large)

  ModelInfo info()
}
