"""A Kombu service, as another team would write it, against one durable QUEUE.

Usage:
  kombu_peer.py AMQP_URL QUEUE publish JSON [COMPRESSION]
      publishes JSON (a JSON object) with Kombu's json serializer (and compression, e.g. zlib)
  kombu_peer.py AMQP_URL QUEUE consume COUNT
      takes COUNT messages, acks each, and prints each as one JSON line:
      {"payload": ..., "content_type": ..., "type": ..., "message_id": ..., "delivery_mode": ...}
"""

import json
import sys

from kombu import Connection, Exchange, Queue

url, queue_name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
queue = Queue(queue_name, Exchange(""), routing_key=queue_name, durable=True, no_declare=True)

with Connection(url) as conn:
    if mode == "publish":
        payload = json.loads(sys.argv[4])
        compression = sys.argv[5] if len(sys.argv) > 5 else None
        producer = conn.Producer()
        producer.publish(
            payload,
            exchange="",
            routing_key=queue_name,
            serializer="json",
            compression=compression,
            delivery_mode=2,
        )
        print("published", flush=True)
    elif mode == "consume":
        count = int(sys.argv[4])
        seen = []

        def on_message(body, message):
            props = message.properties
            seen.append(
                {
                    "payload": body,
                    "content_type": message.content_type,
                    "type": props.get("type"),
                    "message_id": props.get("message_id"),
                    "delivery_mode": props.get("delivery_mode"),
                }
            )
            message.ack()

        with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            print("ready", flush=True)
            while len(seen) < count:
                conn.drain_events(timeout=30)
        for s in seen:
            print(json.dumps(s), flush=True)
    else:
        sys.exit(f"unknown mode {mode}")
