from django.apps import AppConfig


class AuctionsConfig(AppConfig):
    name = "auctions"

    def ready(self):
        from auctions import checks  # noqa: F401  (registers the clearing and pricing settings checks)
        from auctions.services import sla  # noqa: F401  (records the SLA terms stated at submission)
