#[derive(serde::Serialize, serde::Deserialize, mqtransport::Message)]
#[message(name = "orders.created", codec = "xml")]
struct OrderCreated {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, mqtransport::Message)]
#[message(name = "has space")]
struct Spaced {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, mqtransport::Message)]
#[message(topic = "x")]
struct Unknown {
    id: u64,
}

fn main() {}
