use mqtransport::Consumer;

struct Config;

async fn handler(_config: Config) {}

fn main() {
    let _consumer: Consumer = Consumer::new("orders").handle(handler);
}
