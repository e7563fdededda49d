"""rtbserve's model side: parsing, features, synthetic traffic, training, artifacts, serving.

Modules (each has its API in its docstring):
    errors      RequestError and the four request errors mapped to Thrift exceptions
    openrtb     parse_bid_request(raw) -> dict
    features    FeaturePipeline: one feature code path for training and serving
    synthetic   TrafficGenerator: seeded OpenRTB 2.6 traffic with who-bid ground truth
    training    train(...) on synthetic or JSONL data; per-bidder AUC and thresholds
    train_cli   `rtbserve train`
    artifact    write/verify/load artifact directories (model.ubj + manifest.json)
    s3          upload_artifact / fetch_artifact against S3
"""
