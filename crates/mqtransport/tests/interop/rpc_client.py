"""The RPC client of the RabbitMQ tutorials (pika): it sends n as a plain-text body to QUEUE
with a server-named exclusive callback queue as reply_to and a uuid correlation id, waits for
the reply with that id (at most 30 s), and prints its body. Usage: rpc_client.py AMQP_URL QUEUE N"""

import sys
import time
import uuid

import pika

url, queue, n = sys.argv[1], sys.argv[2], sys.argv[3]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue
corr_id = str(uuid.uuid4())
response = None


def on_response(ch, method, props, body):
    global response
    if props.correlation_id == corr_id:
        response = body


channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
channel.basic_publish(
    exchange="",
    routing_key=queue,
    properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id),
    body=n,
)
deadline = time.monotonic() + 30
while response is None and time.monotonic() < deadline:
    connection.process_data_events(time_limit=1)
if response is None:
    print("no reply", flush=True)
    sys.exit(1)
print(response.decode(), flush=True)
connection.close()
