"""A plain boto3 service talking to an mqtransport app over SQS.

usage: sqs_peer.py ENDPOINT REGION SEND_QUEUE RECEIVE_QUEUE

Sends three messages to SEND_QUEUE: JSON with a `type` attribute, JSON with no attributes at
all, and JSON with a `type` attribute and a custom Number attribute. Then receives one message
from RECEIVE_QUEUE (waiting up to 20 s) and prints its body and its `type` attribute as one
line of JSON.
"""

import json
import sys

import boto3

endpoint, region, send_queue, receive_queue = sys.argv[1:5]
sqs = boto3.client(
    "sqs",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
send_url = sqs.get_queue_url(QueueName=send_queue)["QueueUrl"]
receive_url = sqs.get_queue_url(QueueName=receive_queue)["QueueUrl"]

sqs.send_message(
    QueueUrl=send_url,
    MessageBody=json.dumps({"n": 1}),
    MessageAttributes={"type": {"DataType": "String", "StringValue": "Ping"}},
)
sqs.send_message(QueueUrl=send_url, MessageBody=json.dumps({"n": 2}))
sqs.send_message(
    QueueUrl=send_url,
    MessageBody=json.dumps({"n": 3}),
    MessageAttributes={
        "type": {"DataType": "String", "StringValue": "Ping"},
        "priority": {"DataType": "Number", "StringValue": "7"},
    },
)

for _ in range(20):
    got = sqs.receive_message(
        QueueUrl=receive_url,
        MaxNumberOfMessages=1,
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    if got:
        message = got[0]
        attributes = message.get("MessageAttributes", {})
        print(
            json.dumps(
                {
                    "body": json.loads(message["Body"]),
                    "type": attributes.get("type", {}).get("StringValue"),
                    "content_type": attributes.get("content_type", {}).get("StringValue"),
                }
            ),
            flush=True,
        )
        sqs.delete_message(QueueUrl=receive_url, ReceiptHandle=message["ReceiptHandle"])
        break
else:
    sys.exit("no message from the app within 20 s")
