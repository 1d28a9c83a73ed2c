from django.urls import path

from market.api import brokers, views

urlpatterns = [
    path("regions", views.RegionListView.as_view(), name="region-list"),
    path("me", views.MeView.as_view(), name="me"),
    path("provider", views.ProviderProfileView.as_view(), name="provider-profile"),
    path("resources", views.ResourceListView.as_view(), name="resource-list"),
    path("resources/<int:pk>", views.ResourceDetailView.as_view(), name="resource-detail"),
    path("jobs", views.JobListView.as_view(), name="job-list"),
    path("jobs/<int:pk>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<int:pk>/output", views.JobResultFileView.as_view(which="output"), name="job-output"),
    path("jobs/<int:pk>/errors", views.JobResultFileView.as_view(which="errors"), name="job-errors"),
    path("files", views.FileListView.as_view(), name="file-list"),
    path("files/<str:file_id>", views.FileDetailView.as_view(), name="file-detail"),
    path("files/<str:file_id>/content", views.FileContentView.as_view(), name="file-content"),
    path("balance", views.BalanceView.as_view(), name="balance"),
    path("ledger", views.LedgerListView.as_view(), name="ledger"),
    path("operator/deposits", views.OperatorDepositView.as_view(), name="operator-deposits"),
    path("operator/jobs", views.OperatorJobListView.as_view(), name="operator-jobs"),
    path("operator/providers", views.OperatorProviderListView.as_view(), name="operator-providers"),
    path("operator/resources", views.OperatorResourceListView.as_view(), name="operator-resources"),
    path("operator/ledger", views.OperatorLedgerListView.as_view(), name="operator-ledger"),
    # Brokers (issue 12)
    path("broker-appointments", brokers.AppointmentListView.as_view(), name="broker-appointments"),
    path(
        "broker-appointments/<int:pk>/revoke",
        brokers.AppointmentRevokeView.as_view(),
        name="broker-appointment-revoke",
    ),
    path("broker/principals", brokers.BrokerPrincipalListView.as_view(), name="broker-principals"),
    path("broker/fees", brokers.BrokerFeesView.as_view(), name="broker-fees"),
    path("broker/principals/<str:username>/jobs", brokers.BrokerJobSubmitView.as_view(), name="broker-jobs"),
    path(
        "broker/principals/<str:username>/resources/<int:pk>",
        brokers.BrokerResourceView.as_view(),
        name="broker-resource",
    ),
]
