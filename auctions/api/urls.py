from auctions.api.agent import urlpatterns as agent_urls
from auctions.api.agent_offers import urlpatterns as agent_offer_urls
from auctions.api.brokers import urlpatterns as broker_urls
from auctions.api.jobs import urlpatterns as job_urls
from auctions.api.market import urlpatterns as market_urls
from auctions.api.rounds import urlpatterns as round_urls
from auctions.api.sla import urlpatterns as sla_urls

urlpatterns = round_urls + market_urls + agent_urls + agent_offer_urls + job_urls
urlpatterns += sla_urls
urlpatterns += broker_urls
