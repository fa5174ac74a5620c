"""OCPP-J on the wire: a version-neutral core and thin OCPP 1.6 / 2.0.1 adapters.

:mod:`~executor.ocpp.station` is what the executor's dispatch sees of a connected charger, whatever its
version (profile requests and answers, meter samples, events); :mod:`~executor.ocpp.ocppj` frames and
routes OCPP-J messages as the specifications say; :mod:`~executor.ocpp.v16` and
:mod:`~executor.ocpp.v201` translate between the core and each version's messages;
:mod:`~executor.ocpp.server` accepts the websockets (subprotocols, TLS, security profiles 1-3) with
:mod:`~executor.ocpp.auth` checking HTTP Basic credentials.
"""
