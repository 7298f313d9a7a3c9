"""``charrnn serve``: one engine per model stepping every request as one batch, the mailbox
to the event loop, the OpenAI protocol, the HTTP layer and the playground page."""
