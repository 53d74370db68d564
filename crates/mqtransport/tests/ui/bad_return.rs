use mqtransport::Consumer;

async fn handler() -> u32 {
    7
}

fn main() {
    let _consumer: Consumer = Consumer::new("orders").fallback(handler);
}
