"""``proctor demo``: the server plus a SIMULATED agent fleet.

The model is a scripted fake (``demo.model``): no LLM is called and nothing leaves the machine.
The tools are real functions over a small SQLite CRM (``demo.crm``), recorded with
``@proctor.tool``. The agents and their scenarios live in ``demo.fleet``; the fleet is governed
by the policy bundle ``demo/policy.yaml``, with a SIMULATED supervisor answering approval
requests (``demo.governance``); ``demo.run`` wires them to a server started in the same process.
"""
