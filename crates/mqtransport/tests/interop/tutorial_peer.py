"""The pika programs of the RabbitMQ tutorials 1 to 5, as the tutorials write them (the same
names and declarations), with the URL and counts as arguments so that a test can drive them.
Receivers print "ready" once they consume, then one line per message, and exit after COUNT.

Usage:
  tutorial_peer.py URL hello send TEXT                       (send.py)
  tutorial_peer.py URL hello receive COUNT                   (receive.py)
  tutorial_peer.py URL work send TEXT...                     (new_task.py)
  tutorial_peer.py URL work work COUNT                       (worker.py; 10 ms per dot)
  tutorial_peer.py URL logs emit EXCHANGE KIND KEY TEXT      (emit_log*.py)
  tutorial_peer.py URL logs receive EXCHANGE KIND COUNT KEY...  (receive_logs*.py)
"""

import sys
import time

import pika

url, tutorial, mode = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
received = 0


def receive(queue, count, on_body, prefetch=None):
    if prefetch:
        channel.basic_qos(prefetch_count=prefetch)

    def callback(ch, method, properties, body):
        global received
        on_body(method, body.decode())
        ch.basic_ack(delivery_tag=method.delivery_tag)
        received += 1
        if received >= count:
            ch.stop_consuming()

    channel.basic_consume(queue=queue, on_message_callback=callback)
    print("ready", flush=True)
    channel.start_consuming()


if tutorial == "hello":
    channel.queue_declare(queue="hello")
    if mode == "send":
        channel.basic_publish(exchange="", routing_key="hello", body=args[0])
        print(f" [x] Sent '{args[0]}'", flush=True)
    else:
        receive("hello", int(args[0]), lambda m, body: print(f" [x] Received {body}", flush=True))
elif tutorial == "work":
    channel.queue_declare(queue="task_queue", durable=True)
    if mode == "send":
        for message in args:
            channel.basic_publish(
                exchange="",
                routing_key="task_queue",
                body=message,
                properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            )
            print(f" [x] Sent {message}", flush=True)
    else:

        def work(method, body):
            time.sleep(body.count(".") * 0.01)
            print(f" [x] Done {body}", flush=True)

        receive("task_queue", int(args[0]), work, prefetch=1)
elif tutorial == "logs":
    exchange, kind = args[0], args[1]
    channel.exchange_declare(exchange=exchange, exchange_type=kind)
    if mode == "emit":
        channel.basic_publish(exchange=exchange, routing_key=args[2], body=args[3])
        print(f" [x] Sent {args[2]}:{args[3]}", flush=True)
    else:
        count, keys = int(args[2]), args[3:] or [""]
        result = channel.queue_declare(queue="", exclusive=True)
        for key in keys:
            channel.queue_bind(exchange=exchange, queue=result.method.queue, routing_key=key)
        receive(
            result.method.queue,
            count,
            lambda m, body: print(f" [x] {m.routing_key}:{body}", flush=True),
        )
else:
    sys.exit(f"unknown tutorial {tutorial}")
connection.close()
